//! Running the SDK crate's binaries (`pullpass`, `docker-credential-pullpass`,
//! `pullpass-kubelet-credential-provider`) as their users do: with exactly
//! the environment a test gives (none of the test process's own pullpass
//! or GitHub Actions variables leak in), optional standard input, and both
//! outputs kept for the assertions.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::binary;

/// Variables a binary reads that the test process might have set: removed
/// before the test's own `env` is applied.
const INHERITED: &[&str] = &[
    "PULLPASS_TOKEN",
    "PULLPASS_TOKEN_FILE",
    "PULLPASS_WORKSPACE",
    "PULLPASS_PROJECT",
    "PULLPASS_GATEWAY",
    "PULLPASS_IDENTITY_TOKEN",
    "PULLPASS_IDENTITY_TOKEN_FILE",
    "PULLPASS_IDENTITY_TOKEN_FROM",
    "PULLPASS_IDENTITY_AUDIENCE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];

/// Runs the binary `program` with `args`, `env` and optional standard input.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(binary(program));
    command.args(args);
    for name in INHERITED {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// Standard output followed by standard error.
pub fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}
