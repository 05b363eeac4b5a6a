//! What each command does.

use std::io::Write;
use std::time::{Duration, SystemTime};

use pullpass::reference::ImageRef;
use pullpass::v1::{Credential, Provider, Role, WorkspaceKind};
use pullpass_client::{Client, Lease, lease};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Failure;
use crate::cli::{
    AuthArgs, AuthFormat, Cli, Command, Connection, CredentialFields, CredentialsCommand, IdentityPlatform, Kind,
    OutputFormat, ProviderArg, RoleArg, TokensCommand, WorkspacesCommand,
};
use crate::output::{self, print};
use crate::secrets;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let format = cli.output;
    match cli.command {
        Command::ParseRef { image } => parse_ref(&image),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "pullpass", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => {
            let command = <Cli as clap::CommandFactory>::command();
            std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(command, &dir))
                .map_err(|e| Failure::Other(format!("cannot write man pages to {}: {e}", dir.display())))?;
            println!("pullpass: man pages written to {} (try: man -l {}/pullpass.1)", dir.display(), dir.display());
            Ok(())
        }
        Command::Workspaces(command) => workspaces(&connect(&cli.connection).await?, command, format).await,
        Command::Credentials(command) => credentials(&connect(&cli.connection).await?, command, format).await,
        Command::Tokens(command) => tokens(&connect(&cli.connection).await?, command, format).await,
        Command::Audit { workspace, filter, limit } => {
            let client = connect(&cli.connection).await?;
            let events = client.list_audit_events(&workspace, &filter, limit).await?;
            let rows = events
                .iter()
                .map(|e| {
                    vec![
                        output::short_time(&e.event_time),
                        e.action.clone(),
                        e.resource.clone(),
                        format!("{:?}", tonic::Code::from(e.status_code)),
                        e.principal.clone(),
                        e.image.clone(),
                    ]
                })
                .collect();
            let json = Value::Array(events.iter().map(output::audit_event).collect());
            print(format, &json, &["TIME", "ACTION", "RESOURCE", "OUTCOME", "PRINCIPAL", "IMAGE"], rows);
            Ok(())
        }
        Command::Auth(args) => auth(&connect(&cli.connection).await?, args).await,
        Command::ConsoleLink => {
            let client = connect(&cli.connection).await?;
            let link = client.create_console_link().await?;
            match format {
                OutputFormat::Json => {
                    println!("{}", json!({ "url": link.url, "expire_time": output::time(&link.expire_time) }));
                }
                OutputFormat::Table => {
                    println!("{}", link.url);
                    let until = output::short_time(&link.expire_time);
                    eprintln!("pullpass: open this link in your browser; it signs you in once, until {until}");
                }
            }
            Ok(())
        }
    }
}

async fn connect(connection: &Connection) -> Result<Client, Failure> {
    let mut builder = Client::builder(connection.endpoint.clone()).timeout(Duration::from_secs(connection.timeout));
    builder = match &connection.token_file {
        Some(path) => builder.token_file(path),
        None => builder.token_from_env(),
    };
    builder = match (&connection.identity_token_file, connection.identity_token_from) {
        (Some(_), Some(_)) => {
            return Err(Failure::Usage(
                "--identity-token-file and --identity-token-from both name a workload-identity token: give one".into(),
            ));
        }
        (Some(path), None) => builder.identity_token_file(path),
        (None, Some(IdentityPlatform::GithubActions)) => {
            builder.identity_token_from_github_actions(connection.identity_audience.clone())
        }
        (None, None) => builder.identity_token_from_env(),
    };
    if let Some(ca) = &connection.ca_file {
        let pem = std::fs::read(ca).map_err(|e| Failure::Usage(format!("CA file {}: {e}", ca.display())))?;
        builder = builder.ca_certificate_pem(pem);
    }
    if let (Some(cert), Some(key)) = (&connection.client_cert, &connection.client_key) {
        let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())));
        builder = builder.client_certificate_pem(read(cert)?, read(key)?);
    }
    Ok(builder.connect().await?)
}

fn parse_ref(image: &str) -> Result<(), Failure> {
    let parsed = ImageRef::parse(image)
        .map_err(|e| Failure::Usage(format!("`{image}` is not a valid image reference: it {e}")))?;
    let json = json!({
        "registry": parsed.registry().to_string(),
        "endpoint": parsed.endpoint(),
        "repository": parsed.repository(),
        "tag": parsed.tag(),
        "digest": parsed.digest(),
        "normalized": parsed.to_string(),
    });
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    Ok(())
}

async fn workspaces(client: &Client, command: WorkspacesCommand, format: OutputFormat) -> Result<(), Failure> {
    match command {
        WorkspacesCommand::Create { id, kind, display_name } => {
            let kind = match kind {
                Kind::Organization => WorkspaceKind::Organization,
                Kind::Personal => WorkspaceKind::Personal,
            };
            let created = client.create_workspace(&id, kind, &display_name).await?;
            print(
                format,
                &output::workspace(&created),
                &["NAME", "KIND"],
                vec![vec![created.name, format!("{kind:?}")]],
            );
        }
        WorkspacesCommand::List => {
            let all = client.list_workspaces().await?;
            let rows = all
                .iter()
                .map(|w| {
                    let kind = WorkspaceKind::try_from(w.kind).map(|k| k.as_str_name()).unwrap_or("?");
                    vec![
                        output::id(&w.name),
                        kind.to_owned(),
                        w.display_name.clone(),
                        output::short_time(&w.create_time),
                    ]
                })
                .collect();
            let json = Value::Array(all.iter().map(output::workspace).collect());
            print(format, &json, &["ID", "KIND", "DISPLAY NAME", "CREATED"], rows);
        }
        WorkspacesCommand::Rm { id, force } => {
            client.delete_workspace(&id, force).await?;
            print(
                format,
                &json!({ "deleted": pullpass_client::admin::workspace_name(&id) }),
                &["DELETED"],
                vec![vec![id]],
            );
        }
    }
    Ok(())
}

fn provider_of(provider: ProviderArg) -> Provider {
    match provider {
        ProviderArg::DockerHub => Provider::DockerHub,
        ProviderArg::Ghcr => Provider::Ghcr,
        ProviderArg::Gitlab => Provider::Gitlab,
        ProviderArg::Google => Provider::Google,
        ProviderArg::Ecr => Provider::Ecr,
        ProviderArg::Quay => Provider::Quay,
        ProviderArg::Generic => Provider::Generic,
    }
}

/// Fills `credential` from the flags; returns the update-mask paths set.
fn apply_fields(credential: &mut Credential, fields: &CredentialFields) -> Result<Vec<&'static str>, Failure> {
    let mut paths = Vec::new();
    if let Some(registry) = &fields.registry {
        credential.registry_server = registry.clone();
        paths.push("registry_server");
    }
    if let Some(username) = &fields.username {
        credential.username = username.clone();
        paths.push("username");
    }
    if !fields.projects.is_empty() {
        credential.allowed_projects = fields.projects.clone();
        paths.push("allowed_projects");
    }
    if let Some(allow) = fields.allow_passthrough {
        credential.allow_passthrough = allow;
        paths.push("allow_passthrough");
    }
    if let Some(description) = &fields.description {
        credential.description = description.clone();
        paths.push("description");
    }
    if !fields.realms.is_empty() {
        credential.token_realm_allowlist = fields.realms.clone();
        paths.push("token_realm_allowlist");
    }
    if let Some(path) = &fields.ca_bundle {
        credential.ca_bundle_pem =
            std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("CA bundle {}: {e}", path.display())))?;
        paths.push("ca_bundle_pem");
    }
    Ok(paths)
}

fn credential_row(c: &Credential) -> Vec<String> {
    vec![
        output::id(&c.name),
        output::provider_name(c.provider),
        c.registry_server.clone(),
        c.username.clone(),
        c.secret_version.to_string(),
        if c.allowed_projects.is_empty() { "*".into() } else { c.allowed_projects.join(",") },
        if c.allow_passthrough { "yes".into() } else { "no".into() },
    ]
}

const CREDENTIAL_HEADERS: [&str; 7] =
    ["ID", "PROVIDER", "REGISTRY", "USERNAME", "SECRET V.", "PROJECTS", "PASSTHROUGH"];

async fn credentials(client: &Client, command: CredentialsCommand, format: OutputFormat) -> Result<(), Failure> {
    match command {
        CredentialsCommand::Add { id, workspace, provider, fields, secret } => {
            let mut credential = Credential { provider: provider_of(provider) as i32, ..Default::default() };
            apply_fields(&mut credential, &fields)?;
            let secret = secrets::read(&secret, true)?.ok_or_else(|| Failure::Usage("a secret is required".into()))?;
            credential.secret = secret.to_string();
            let created = client.create_credential(&workspace, &id, credential).await?;
            for note in &created.normalizations {
                eprintln!("note: {note}");
            }
            print(format, &output::credential(&created), &CREDENTIAL_HEADERS, vec![credential_row(&created)]);
        }
        CredentialsCommand::List { workspace, filter } => {
            let all = client.list_credentials(&workspace, &filter).await?;
            let json = Value::Array(all.iter().map(output::credential).collect());
            print(format, &json, &CREDENTIAL_HEADERS, all.iter().map(credential_row).collect());
        }
        CredentialsCommand::Show { id, workspace } => {
            let found = client.get_credential(&workspace, &id).await?;
            print(format, &output::credential(&found), &CREDENTIAL_HEADERS, vec![credential_row(&found)]);
        }
        CredentialsCommand::Update { id, workspace, fields, clear_projects, secret, new_secret } => {
            let mut credential =
                Credential { name: pullpass_client::admin::credential_name(&workspace, &id), ..Default::default() };
            let mut paths = apply_fields(&mut credential, &fields)?;
            if clear_projects {
                paths.push("allowed_projects");
            }
            if let Some(secret) = secrets::read(&secret, new_secret)? {
                credential.secret = secret.to_string();
                paths.push("secret");
            }
            if paths.is_empty() {
                return Err(Failure::Usage("nothing to update: give a field flag or a new secret".into()));
            }
            let updated = client.update_credential(credential, &paths).await?;
            for note in &updated.normalizations {
                eprintln!("note: {note}");
            }
            print(format, &output::credential(&updated), &CREDENTIAL_HEADERS, vec![credential_row(&updated)]);
        }
        CredentialsCommand::Rm { id, workspace } => {
            client.delete_credential(&workspace, &id).await?;
            let name = pullpass_client::admin::credential_name(&workspace, &id);
            print(format, &json!({ "deleted": name }), &["DELETED"], vec![vec![name.clone()]]);
        }
        CredentialsCommand::Test { id, workspace, repository, push } => {
            let report = client.test_credential(&workspace, &id, &repository, push).await?;
            let json = json!({
                "success": report.success,
                "status": output::status(&report.status),
                "kind": pullpass::v1::AuthKind::try_from(report.kind).map(|k| k.as_str_name()).unwrap_or("AUTH_KIND_UNSPECIFIED"),
                "registry": report.registry,
                "requested_scope": report.requested_scope,
                "granted_scope": report.granted_scope,
                "expire_time": output::time(&report.expire_time),
            });
            let outcome = if report.success {
                "ok".to_owned()
            } else {
                report.status.as_ref().map(|s| s.message.clone()).unwrap_or_default()
            };
            print(
                format,
                &json,
                &["RESULT", "GRANTED", "EXPIRES"],
                vec![vec![outcome, report.granted_scope.clone(), output::short_time(&report.expire_time)]],
            );
            if !report.success {
                let error = report.status.as_ref().map(pullpass_client::Error::from_rpc_status);
                return Err(error.map_or_else(|| Failure::Other("the test failed".into()), Failure::Api));
            }
        }
        CredentialsCommand::ImportDockerConfig { file, workspace, prefix, dry_run } => {
            let text = Zeroizing::new(if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?
            });
            let report = client.import_docker_config(&workspace, text.to_string(), &prefix, dry_run).await?;
            let results: Vec<Value> = report
                .results
                .iter()
                .map(|r| {
                    json!({
                        "config_key": r.config_key,
                        "credential": r.credential.as_ref().map(output::credential),
                        "status": output::status(&r.status),
                    })
                })
                .collect();
            let rows = report
                .results
                .iter()
                .map(|r| {
                    let outcome = match &r.status {
                        Some(s) if s.code != 0 => s.message.clone(),
                        _ => if dry_run { "would create" } else { "created" }.to_owned(),
                    };
                    vec![
                        r.config_key.clone(),
                        r.credential.as_ref().map(|c| output::id(&c.name)).unwrap_or_default(),
                        outcome,
                    ]
                })
                .collect();
            let json = json!({ "created_count": report.created_count, "validate_only": dry_run, "results": results });
            print(format, &json, &["ENTRY", "CREDENTIAL", "OUTCOME"], rows);
        }
    }
    Ok(())
}

/// `90d`, `12h`, `30m`, `45s`.
fn parse_duration(text: &str) -> Result<Duration, Failure> {
    let bad = || Failure::Usage(format!("`{text}` is not a duration such as 90d, 12h, 30m or 45s"));
    let (number, unit) = text.split_at(text.len().checked_sub(1).ok_or_else(bad)?);
    let amount: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "d" => amount * 86_400,
        "h" => amount * 3600,
        "m" => amount * 60,
        "s" => amount,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(seconds))
}

async fn tokens(client: &Client, command: TokensCommand, format: OutputFormat) -> Result<(), Failure> {
    let row = |t: &pullpass::v1::AccessToken| {
        vec![
            output::id(&t.name),
            Role::try_from(t.role).map(|r| r.as_str_name().to_owned()).unwrap_or_default(),
            if t.projects.is_empty() { "*".into() } else { t.projects.join(",") },
            output::short_time(&t.expire_time),
            output::short_time(&t.last_used_time),
            if t.revoke_time.is_some() { "revoked".into() } else { "active".into() },
        ]
    };
    const HEADERS: [&str; 6] = ["ID", "ROLE", "PROJECTS", "EXPIRES", "LAST USED", "STATE"];
    match command {
        TokensCommand::Create { workspace, role, projects, expires_in, description } => {
            let role = match role {
                RoleArg::Admin => Role::Admin,
                RoleArg::Launcher => Role::Launcher,
                RoleArg::Viewer => Role::Viewer,
            };
            let expire_time = match expires_in {
                Some(text) => {
                    let at = SystemTime::now() + parse_duration(&text)?;
                    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
                    Some(prost_types::Timestamp { seconds: since.as_secs() as i64, nanos: 0 })
                }
                None => None,
            };
            let created = client.create_access_token(&workspace, role, &projects, expire_time, &description).await?;
            match format {
                OutputFormat::Json => print(format, &output::access_token(&created), &[], vec![]),
                OutputFormat::Table => {
                    eprintln!("token {} (shown once, store it now):", created.name);
                    println!("{}", created.token);
                }
            }
        }
        TokensCommand::List { workspace } => {
            let all = client.list_access_tokens(&workspace).await?;
            let json = Value::Array(all.iter().map(output::access_token).collect());
            print(format, &json, &HEADERS, all.iter().map(row).collect());
        }
        TokensCommand::Revoke { name } => {
            let revoked = client.revoke_access_token(&name).await?;
            print(format, &output::access_token(&revoked), &HEADERS, vec![row(&revoked)]);
        }
    }
    Ok(())
}

fn lease_json(lease: &Lease) -> Value {
    let mut value = json!({
        "image": lease.image,
        "normalized_image": lease.normalized_image,
        "registry": lease.registry,
        "expire_time": unix(lease.expire_time),
        "issue_time": unix(lease.issue_time),
        "requested_scope": lease.requested_scope,
        "granted_scope": lease.granted_scope,
        "credential": lease.credential,
        "cached": !matches!(lease.source, pullpass_client::Source::Registry),
    });
    if let Some(gateway_image) = &lease.gateway_image {
        value["gateway_image"] = gateway_image.as_str().into();
    }
    match &lease.grant {
        pullpass_client::Grant::Bearer { token } => {
            value["kind"] = "BEARER".into();
            value["token"] = token.as_str().into();
        }
        pullpass_client::Grant::Basic { username, password } => {
            value["kind"] = "BASIC".into();
            value["username"] = username.as_str().into();
            value["password"] = password.as_str().into();
        }
    }
    value
}

fn unix(time: SystemTime) -> Value {
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default();
    Value::String(pullpass::time::format_rfc3339(seconds))
}

async fn auth(client: &Client, args: AuthArgs) -> Result<(), Failure> {
    let basic = args.basic || matches!(args.format, AuthFormat::K8sSecret | AuthFormat::ApptainerEnv);
    let mut request = client.registry_auths(args.images.clone()).workspace(args.workspace.clone());
    if let Some(project) = &args.project {
        request = request.project(project.clone());
    }
    if args.push {
        request = request.push();
    }
    if args.via_gateway {
        request = request.via_gateway();
    } else if basic {
        request = request.basic();
    }
    let outcomes = request.send_all().await?;
    if args.via_gateway && !matches!(args.format, AuthFormat::Json | AuthFormat::Image) {
        for lease in outcomes.iter().flatten() {
            eprintln!("pullpass: pull {}", lease.pull_image());
        }
    }
    let render_error = |e: pullpass_client::RenderError| {
        Failure::Api(pullpass_client::Error::FailedPrecondition {
            reason: Some("AUTH_FORM_UNAVAILABLE".into()),
            message: e.to_string(),
        })
    };
    let text: Zeroizing<String> = match args.format {
        AuthFormat::Json => {
            let values: Vec<Value> = args
                .images
                .iter()
                .zip(&outcomes)
                .map(|(image, outcome)| match outcome {
                    Ok(lease) => lease_json(lease),
                    Err(error) => {
                        json!({ "image": image, "error": { "reason": error.reason(), "message": error.to_string() } })
                    }
                })
                .collect();
            Zeroizing::new(serde_json::to_string_pretty(&Value::Array(values)).unwrap_or_default() + "\n")
        }
        _ => {
            let mut leases = Vec::new();
            for outcome in outcomes.iter() {
                match outcome {
                    Ok(lease) => leases.push(lease.clone()),
                    Err(error) => return Err(Failure::Api(error.clone())),
                }
            }
            match args.format {
                AuthFormat::Header => {
                    Zeroizing::new(leases.iter().map(|l| format!("{}\n", l.authorization_header().as_str())).collect())
                }
                AuthFormat::SkopeoArgs => Zeroizing::new(
                    leases
                        .iter()
                        .map(|l| l.skopeo_args().iter().map(|a| format!("{}\n", a.as_str())).collect::<String>())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                AuthFormat::DockerConfig => Zeroizing::new(lease::docker_config(&leases).to_string() + "\n"),
                AuthFormat::K8sSecret => Zeroizing::new(
                    lease::kubernetes_secret(&leases, &args.secret_name, args.namespace.as_deref())
                        .map_err(render_error)?
                        .to_string()
                        + "\n",
                ),
                AuthFormat::ApptainerEnv => {
                    if leases.len() != 1 {
                        return Err(Failure::Usage("--format apptainer-env takes exactly one image".into()));
                    }
                    lease::shell_exports(&leases[0].apptainer_env().map_err(render_error)?)
                }
                AuthFormat::Image => Zeroizing::new(leases.iter().map(|l| format!("{}\n", l.pull_image())).collect()),
                AuthFormat::Json => unreachable!("handled above"),
            }
        }
    };
    write_output(args.out.as_deref(), &text)?;
    if let Some(Err(error)) = outcomes.into_iter().find(Result::is_err) {
        return Err(Failure::Api(error));
    }
    Ok(())
}

/// Writes secret-bearing output to stdout or a new 0600 file.
fn write_output(path: Option<&std::path::Path>, text: &str) -> Result<(), Failure> {
    match path {
        None => {
            std::io::stdout().write_all(text.as_bytes()).map_err(|e| Failure::Other(e.to_string()))?;
        }
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
            file.write_all(text.as_bytes()).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}
