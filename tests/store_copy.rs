//! Moving an installation: `pullpassd store copy` from SQLite into a real
//! PostgreSQL (sealed rows as they are, the audit chain still verifiable,
//! an interrupted copy resumed), and `backup` of a PostgreSQL database
//! into an SQLite file that a server then runs on.

use std::path::Path;

use pullpass::v1::{Credential, Provider, Role};
use pullpass_tests::postgres::Database;
use pullpass_tests::{Options, Pullpassd, create_workspace, pullpassd_command_on};

/// An SQLite installation with workspaces, credentials, tokens and audit
/// events; stopped. Returns it and the launcher token it minted.
async fn sqlite_installation() -> (Pullpassd, String) {
    let mut server = Pullpassd::start();
    assert!(server.database.is_none(), "run without PULLPASS_TEST_BACKEND: the source is SQLite");
    let root = server.client().await;
    for workspace in ["acme", "beta"] {
        create_workspace(&root, workspace).await;
        for i in 0..7 {
            root.create_credential(
                workspace,
                &format!("reg-{i}"),
                Credential {
                    provider: Provider::Generic as i32,
                    registry_server: format!("registry{i}.example/team"),
                    username: "robot".into(),
                    secret: format!("copy-CANARY-{workspace}-{i}"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        }
    }
    let launcher = root.create_access_token("acme", Role::Launcher, &[], None, "copied").await.unwrap();
    server.stop();
    (server, launcher.token)
}

fn run(data_dir: &Path, database: Option<&Database>, args: &[&str]) -> (bool, String) {
    let output = pullpassd_command_on(data_dir, database, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
    )
}

fn head(data_dir: &Path, database: Option<&Database>) -> serde_json::Value {
    let (ok, out) = run(data_dir, database, &["audit", "head"]);
    assert!(ok, "{out}");
    serde_json::from_str(out.lines().next().unwrap()).unwrap()
}

fn copy_args<'a>(from: &'a str, database: &'a Database) -> Vec<&'a str> {
    vec![
        "store",
        "copy",
        "--from",
        from,
        "--to",
        &database.url,
        "--database-password-file",
        database.password_file.to_str().unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_installation_copied_to_postgresql_serves_with_its_secrets_tokens_and_audit_chain() {
    let (sqlite, launcher) = sqlite_installation().await;
    let database = Database::fresh();
    let from = format!("sqlite:{}", sqlite.data_dir.join("pullpass.db").display());
    let before = head(&sqlite.data_dir, None);
    let (ok, out) = run(&sqlite.data_dir, None, &copy_args(&from, &database));
    assert!(ok, "{out}");
    assert!(out.contains("credentials: 14/14"), "{out}");
    assert!(!out.contains(&database.password), "the password is never printed");

    // The copy verifies on PostgreSQL: same chain head, every secret opens.
    assert_eq!(head(&sqlite.data_dir, Some(&database)), before);
    let (ok, out) = run(&sqlite.data_dir, Some(&database), &["audit", "verify"]);
    assert!(ok && out.contains("audit chain intact"), "{out}");
    let (ok, out) = run(&sqlite.data_dir, Some(&database), &["keys", "verify"]);
    assert!(ok && out.contains("14 secret(s) open, 0 do not"), "{out}");
    // Sealed means sealed: no secret in clear in PostgreSQL's files.
    for dir in database.stored_dirs() {
        assert!(pullpass_tests::files_containing(&dir, b"copy-CANARY").is_empty(), "a secret in {}", dir.display());
    }

    // A server on the copy: the same credentials, and tokens still work.
    let key_file = sqlite.data_dir.join("master.key").display().to_string();
    let mut on_pg = Pullpassd::start_with(Options {
        args: vec!["--key-file".into(), key_file],
        database: Some(database.clone()),
        ..Default::default()
    })
    .unwrap();
    on_pg.root_token = sqlite.root_token.clone();
    let root = on_pg.client().await;
    assert_eq!(root.list_credentials("acme", "").await.unwrap().len(), 7);
    let as_launcher = on_pg.client_with(Some(&launcher)).await;
    let listed = as_launcher.list_credentials("acme", "").await;
    assert!(listed.is_err_and(|e| e.to_string().contains("LAUNCHER")), "the launcher is known, with its role");
    root.create_credential(
        "beta",
        "after-copy",
        Credential { provider: Provider::Ghcr as i32, username: "u".into(), secret: "s".into(), ..Default::default() },
    )
    .await
    .unwrap();
    on_pg.stop();
    let (ok, out) = run(&sqlite.data_dir, Some(&database), &["audit", "verify"]);
    assert!(ok, "the chain continues after the copy: {out}");

    // Copying again into a database that holds data is refused.
    let (ok, out) = run(&sqlite.data_dir, None, &copy_args(&from, &database));
    assert!(!ok && out.contains("not empty"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_where_it_stopped() {
    let (sqlite, _) = sqlite_installation().await;
    let database = Database::fresh();
    let from = format!("sqlite:{}", sqlite.data_dir.join("pullpass.db").display());
    let mut args = copy_args(&from, &database);
    args.extend(["--batch-size", "3", "--fault-abort-after-batches", "5"]);
    let (ok, out) = run(&sqlite.data_dir, None, &args);
    assert!(!ok && out.contains("fault hook"), "{out}");
    let copied = database.sql("SELECT count(*) FROM credentials");
    assert!(copied.trim().parse::<u32>().unwrap() < 14, "stopped midway ({copied})");

    // Another source may not finish it.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(sqlite.data_dir.join("pullpass.db"), other.path().join("other.db")).unwrap();
    let elsewhere = format!("sqlite:{}", other.path().join("other.db").display());
    let (ok, out) = run(&sqlite.data_dir, None, &copy_args(&elsewhere, &database));
    assert!(!ok && out.contains("interrupted copy from"), "{out}");

    let (ok, out) = run(&sqlite.data_dir, None, &copy_args(&from, &database));
    assert!(ok && out.contains("resumed"), "{out}");
    assert_eq!(database.sql("SELECT count(*) FROM credentials").trim(), "14");
    assert_eq!(head(&sqlite.data_dir, Some(&database)), head(&sqlite.data_dir, None));
    let (ok, out) = run(&sqlite.data_dir, Some(&database), &["audit", "verify"]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_postgresql_is_an_sqlite_file_a_server_runs_on() {
    let database = Database::fresh();
    let mut on_pg = Pullpassd::start_with(Options { database: Some(database.clone()), ..Default::default() }).unwrap();
    let root = on_pg.client().await;
    create_workspace(&root, "acme").await;
    root.create_credential(
        "acme",
        "reg",
        Credential {
            provider: Provider::Ghcr as i32,
            username: "u".into(),
            secret: "backup-CANARY".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Online: the server keeps running during the backup.
    let home = tempfile::tempdir().unwrap();
    let restored = home.path().join("data");
    std::fs::create_dir_all(&restored).unwrap();
    let file = restored.join("pullpass.db");
    std::fs::write(&file, b"an older backup, replaced only by a complete one").unwrap();
    let out = on_pg.command(&["backup", "--to", file.to_str().unwrap(), "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("store copy --from sqlite:"));
    let left: Vec<_> = std::fs::read_dir(&restored).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("pullpass.db")], "one self-contained file, no partial one");
    let refused = on_pg.command(&["backup", "--to", on_pg.data_dir.join("master.key").to_str().unwrap(), "--force"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("the master key file"), "{refused:?}");
    let live_head = head(&on_pg.data_dir, Some(&database));
    on_pg.stop();
    assert!(pullpass_tests::files_containing(&restored, b"backup-CANARY").is_empty());

    std::fs::copy(on_pg.data_dir.join("master.key"), restored.join("master.key")).unwrap();
    let mut from_backup = Pullpassd::start_with(Options { home: Some(home.path().to_owned()), ..Default::default() })
        .expect("a server starts on the backup");
    assert!(from_backup.database.is_none());
    from_backup.root_token = on_pg.root_token.clone();
    let names: Vec<String> =
        from_backup.client().await.list_credentials("acme", "").await.unwrap().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["workspaces/acme/credentials/reg"]);
    from_backup.stop();
    assert_eq!(head(&restored, None), live_head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_verification_and_root_tokens_work_on_postgresql() {
    let database = Database::fresh();
    let mut server = Pullpassd::start_with(Options { database: Some(database.clone()), ..Default::default() }).unwrap();
    let root = server.client().await;
    create_workspace(&root, "acme").await;
    for i in 0..5 {
        root.create_credential(
            "acme",
            &format!("reg-{i}"),
            Credential {
                provider: Provider::Ghcr as i32,
                username: "u".into(),
                secret: format!("s{i}"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    server.stop();
    let (ok, out) = run(&server.data_dir, Some(&database), &["keys", "rotate", "--new-key", "--batch-size", "2"]);
    assert!(ok && out.contains("rotated 5/5"), "{out}");
    let (ok, out) = run(&server.data_dir, Some(&database), &["keys", "verify"]);
    assert!(ok && out.contains("5 secret(s) open, 0 do not"), "{out}");
    let (ok, out) = run(&server.data_dir, Some(&database), &["tokens", "create-root", "--description", "ops"]);
    assert!(ok, "{out}");
    let token = out.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("a root token").to_owned();
    let (ok, out) = run(&server.data_dir, Some(&database), &["audit", "verify"]);
    assert!(ok, "{out}");
    let mut server = server.restart();
    server.root_token = token;
    assert_eq!(server.client().await.list_credentials("acme", "").await.unwrap().len(), 5);
}
