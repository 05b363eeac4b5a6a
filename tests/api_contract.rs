//! The API contract's tooling: `scripts/check-api.sh` (buf lint with the
//! STANDARD and COMMENTS rules, and buf breaking against the previous
//! commit) passes on the repository, and buf does refuse what it should: a
//! renamed field (JSON names are grpcurl's contract) and a message without
//! a comment.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pullpass_tests::{repo_root, tools_dir};

fn buf(dir: &Path, args: &[&str]) -> Output {
    let buf = tools_dir().join("node/node_modules/.bin/buf");
    assert!(buf.exists(), "buf not found at {}: run scripts/install-test-deps.sh", buf.display());
    Command::new(buf).args(args).current_dir(dir).stdin(Stdio::null()).output().expect("run buf")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// A copy of the repository's `proto/` and `buf.yaml`, changed by `edit`.
fn edited_copy(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("buf.yaml"), dir.path().join("buf.yaml")).unwrap();
    let copied = Command::new("cp").arg("-r").arg(repo_root().join("proto")).arg(dir.path()).status().unwrap();
    assert!(copied.success());
    let file = dir.path().join("proto/pullpass/v1/access_service.proto");
    let source = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, edit(&source)).unwrap();
    dir
}

#[test]
fn the_contract_lints_and_breaks_nothing_against_the_previous_commit() {
    let checked = Command::new(repo_root().join("scripts/check-api.sh")).stdin(Stdio::null()).output().unwrap();
    assert!(checked.status.success(), "{}", text(&checked));
    assert!(text(&checked).contains("breaks nothing"));
}

#[test]
fn buf_refuses_a_renamed_field_and_a_message_without_a_comment() {
    let renamed = edited_copy(|s| s.replacen("string display_name = ", "string shown_name = ", 1));
    let proto = repo_root().join("proto");
    let broken = buf(renamed.path(), &["breaking", "--against", proto.to_str().unwrap()]);
    assert!(!broken.status.success());
    assert!(text(&broken).contains("display_name"), "{}", text(&broken));

    let uncommented = edited_copy(|s| format!("{s}\nmessage Undocumented {{\n  // A field.\n  string name = 1;\n}}\n"));
    let linted = buf(uncommented.path(), &["lint"]);
    assert!(!linted.status.success());
    assert!(text(&linted).contains("Undocumented"), "{}", text(&linted));
}
