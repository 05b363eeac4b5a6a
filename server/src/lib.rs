//! `pullpass-server`: the pullpass registry-credential broker behind the
//! `pullpassd` binary.
//!
//! Dependencies point one way (see ARCHITECTURE.md):
//! `api` → `access`, `broker`, `credentials`, `workspaces` → `upstream`,
//! `seal`, `store` → `domain`.
//! `api` is the only module that knows gRPC; `store` the only one that knows
//! SQL; `seal` the only one that sees key material.

pub mod access;
pub mod api;
pub mod audit;
pub mod backup_file;
pub mod broker;
pub mod buckets;
pub mod changes;
pub mod cli;
pub mod coalesce;
pub mod commands;
pub mod config;
pub mod connections;
pub mod console;
pub mod credentials;
pub mod doctor;
pub mod domain;
pub mod error;
pub mod filter;
pub mod gateway;
pub mod http_listener;
pub mod identities;
pub mod issuer;
pub mod logging;
pub mod metrics;
pub mod paging;
#[cfg(test)]
mod parser_properties;
pub mod probe;
pub mod providers;
pub mod pulls;
pub mod request_id;
pub mod seal;
pub mod secret;
pub mod server;
pub mod singleflight;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod workspaces;

use cli::{AuditCommand, Cli, Command, KeysCommand, StoreCommand, TokensCommand};
use config::Settings;
use startup::StartupError;

/// Runs the command line; returns the process exit code.
pub fn main_with(cli: Cli) -> i32 {
    // Commands that need no settings (and must work whatever the
    // environment holds: a probe inherits the server's variables).
    match &cli.command {
        Some(Command::Healthcheck { address, tls_ca, tls_server_name, service, timeout }) => {
            let tls = probe::Tls { ca: tls_ca.as_deref(), server_name: tls_server_name.as_deref() };
            return probe::healthcheck(address, tls, service, std::time::Duration::from_secs(*timeout));
        }
        Some(Command::Man { dir }) => return cli::write_man_pages(<Cli as clap::CommandFactory>::command(), dir),
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "pullpassd", &mut std::io::stdout());
            return 0;
        }
        _ => {}
    }
    let serve = match &cli.command {
        Some(Command::Doctor { serve }) => serve.as_ref(),
        _ => &cli.serve,
    };
    let settings = match Settings::resolve(&cli.common, serve) {
        Ok(settings) => settings,
        Err(message) if matches!(cli.command, Some(Command::Doctor { .. })) => {
            println!("FAIL  configuration: {message}");
            println!("      fix: correct the option it names (pullpassd doctor --help lists them)");
            return 1;
        }
        Err(message) => {
            eprintln!("pullpassd: {message}");
            return 2;
        }
    };
    if matches!(cli.command, Some(Command::Doctor { .. })) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("pullpassd: cannot start the async runtime: {e}");
                return 1;
            }
        };
        return if runtime.block_on(doctor::run(&settings)) { 0 } else { 1 };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pullpassd: cannot start the async runtime: {e}");
            return 1;
        }
    };
    // The trace exporter's gRPC channel needs the runtime.
    let entered = runtime.enter();
    logging::init(settings.log_format, &settings.log_level);
    #[cfg(feature = "otel")]
    let _flush_traces = telemetry::TracingGuard;
    drop(entered);
    let result = runtime.block_on(dispatch(cli.command, settings));
    match result {
        Ok(()) => 0,
        Err(StartupError(message)) => {
            tracing::error!(error = %message, "pullpassd stopped");
            eprintln!("pullpassd: {message}");
            1
        }
    }
}

async fn dispatch(command: Option<Command>, settings: Settings) -> Result<(), StartupError> {
    match command {
        None => server::run(settings).await,
        Some(Command::Keys(KeysCommand::Generate)) => match &settings.keys {
            config::KeySource::File(path) => commands::keys_generate(path),
            _ => Err(StartupError("`keys generate` needs --key-file FILE".into())),
        },
        Some(Command::Keys(KeysCommand::Add)) => commands::keys_add(&settings).map(|_| ()),
        Some(Command::Keys(KeysCommand::Rotate { new_key, batch_size, fault_abort_after_batches })) => {
            if new_key {
                commands::keys_add(&settings)?;
            }
            let options = commands::RotateOptions {
                batch_size: usize::from(batch_size),
                abort_after_batches: fault_abort_after_batches,
            };
            commands::keys_rotate(&settings, options).await
        }
        Some(Command::Keys(KeysCommand::RotateSigning { activate_in })) => {
            commands::keys_rotate_signing(&settings, activate_in).await
        }
        Some(Command::Keys(KeysCommand::List)) => commands::keys_list(&settings).await,
        Some(Command::Keys(KeysCommand::Verify)) => commands::keys_verify(&settings).await,
        Some(Command::Backup { to, force }) => commands::backup(&settings, &to, force).await,
        Some(Command::Store(StoreCommand::Copy { from, to, batch_size, fault_abort_after_batches })) => {
            commands::store_copy(&settings, &from, &to, batch_size as usize, fault_abort_after_batches).await
        }
        Some(Command::Tokens(TokensCommand::CreateRoot { description, ttl })) => {
            commands::tokens_create_root(&settings, &description, ttl).await
        }
        Some(Command::Tokens(TokensCommand::RevokeRoot { name })) => {
            commands::tokens_revoke_root(&settings, &name).await
        }
        Some(Command::Tokens(TokensCommand::ListRoot)) => commands::tokens_list_root(&settings).await,
        Some(Command::Audit(AuditCommand::Verify)) => commands::audit_verify(&settings).await,
        Some(Command::Audit(AuditCommand::Head)) => commands::audit_head(&settings).await,
        Some(Command::Audit(AuditCommand::Prune { older_than_days, older_than_seconds })) => {
            let seconds = older_than_seconds.unwrap_or(older_than_days.unwrap_or(1) * 86_400);
            commands::audit_prune(&settings, std::time::Duration::from_secs(seconds)).await
        }
        Some(
            Command::Healthcheck { .. } | Command::Man { .. } | Command::Completions { .. } | Command::Doctor { .. },
        ) => {
            unreachable!("handled before the settings are read")
        }
    }
}
