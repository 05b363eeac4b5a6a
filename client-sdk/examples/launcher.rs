//! A minimal launcher: before starting a task, ask pullpass for auth for
//! every image the task will pull, and write the files its worker needs.
//!
//! ```text
//! PULLPASS_ENDPOINT=http://127.0.0.1:50051 PULLPASS_TOKEN=pp_… \
//!   cargo run -p pullpass-client --example launcher -- acme rnaseq ./task-1 ghcr.io/acme/aligner:2.1 ubuntu:24.04
//! ```
//!
//! Writes into the task directory:
//! * `skopeo/<n>.args`: the arguments to put before `docker://IMAGE` (one per line);
//! * `auth.env`: `REGISTRY_AUTH_<n>=<Authorization header>` lines for HTTP clients;
//! * `config.json`: a docker config (bearer tokens as `registrytoken`).
//!
//! Every file is created with mode 0600: they hold short-lived secrets.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pullpass_client::{Client, lease};

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(content.as_bytes())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [workspace, project, task_dir, images @ ..] = args.as_slice() else {
        eprintln!("usage: launcher WORKSPACE PROJECT TASK_DIR IMAGE...");
        std::process::exit(2);
    };
    let client = Client::from_env().connect().await?;
    let outcomes = client
        .registry_auths(images.iter().cloned())
        .workspace(workspace.as_str())
        .project(project.as_str())
        .send_all()
        .await?;

    let task_dir = Path::new(task_dir);
    std::fs::create_dir_all(task_dir.join("skopeo"))?;
    let mut leases = Vec::new();
    let mut env = String::new();
    for (n, (image, outcome)) in images.iter().zip(outcomes).enumerate() {
        match outcome {
            Ok(lease) => {
                let args: String = lease.skopeo_args().iter().map(|a| format!("{}\n", a.as_str())).collect();
                write_private(&task_dir.join(format!("skopeo/{n}.args")), &args)?;
                env.push_str(&format!("REGISTRY_AUTH_{n}={}\n", lease.authorization_header().as_str()));
                println!(
                    "{image}: {} lease from {}, valid {} s",
                    if lease.token().is_some() { "bearer" } else { "basic" },
                    lease.credential,
                    lease.remaining().as_secs()
                );
                leases.push(lease);
            }
            Err(error) => {
                eprintln!("{image}: {error}");
                std::process::exit(1);
            }
        }
    }
    write_private(&task_dir.join("auth.env"), &env)?;
    write_private(&task_dir.join("config.json"), &lease::docker_config(&leases))?;
    Ok(())
}
