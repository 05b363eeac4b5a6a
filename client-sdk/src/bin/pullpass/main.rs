//! `pullpass`: the admin and debugging CLI of pullpass. See `pullpass --help`.
//!
//! Exit codes: 0 ok; 1 other errors; 2 usage or invalid input; 3 not found;
//! 4 unauthenticated or permission denied; 5 unavailable or rate limited;
//! 6 failed precondition (passthrough not allowed, realm not allowed…).

mod cli;
mod commands;
mod output;
mod secrets;

use clap::Parser;
use pullpass_client::Error;

fn main() {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pullpass: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("pullpass: {failure}");
            failure.exit_code()
        }
    };
    std::process::exit(code);
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    /// A pullpass error.
    Api(Error),
    /// Bad input detected locally (exit 2).
    Usage(String),
    /// Anything else (exit 1).
    Other(String),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) => 2,
            Failure::Other(_) => 1,
            Failure::Api(error) => match error {
                Error::InvalidImage { .. } | Error::InvalidArgument { .. } | Error::Configuration(_) => 2,
                Error::NotFound(_) | Error::NotFoundForRegistry(_) => 3,
                Error::Unauthenticated(_) | Error::PermissionDenied { .. } => 4,
                Error::Unavailable { .. } | Error::RateLimited { .. } | Error::Connect(_) => 5,
                Error::PassthroughNotAllowed(_) | Error::FailedPrecondition { .. } => 6,
                _ => 1,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Api(Error::InvalidArgument { message, violations }) if !violations.is_empty() => {
                write!(f, "invalid request: {message}")?;
                for (field, description) in violations {
                    write!(f, "\n  {field}: {description}")?;
                }
                Ok(())
            }
            Failure::Api(error) => write!(f, "{error}"),
            Failure::Usage(message) | Failure::Other(message) => f.write_str(message),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure::Api(error)
    }
}
