//! The server's life: restarts keep everything, acknowledged writes survive
//! a kill, SIGTERM drains in-flight RPCs and closes the database, online
//! backups restore to a working server, one log line per RPC.

use std::time::Duration;

use pullpass::v1::{Credential, ListCredentialsRequest, Provider};
use pullpass_tests::faults::{Fault, FaultProxy};
use pullpass_tests::fixtures::credential;
use pullpass_tests::http_fixture::TokenRealm;
use pullpass_tests::{
    Options, Pullpassd, create_credential, create_workspace, files_containing, issue_registry_auth, list_credentials,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_workspaces_credentials_versions_and_the_root_token() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    for provider in [Provider::Ghcr, Provider::Quay, Provider::Generic] {
        create_credential(&client, provider.as_str_name(), credential(provider, "pw")).await.unwrap();
    }
    let before = list_credentials(&client).await;
    let server = server.restart();
    assert!(server.stdout().matches("PULLPASS_TOKEN=").count() == 1, "the root token is printed on first start only");
    let client = server.client().await;
    assert_eq!(list_credentials(&client).await, before);
    let verify = server.command(&["keys", "verify"]);
    assert!(String::from_utf8_lossy(&verify.stdout).contains("3 secret(s) open"), "{verify:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_acknowledged_before_a_kill_survives_it() {
    let mut server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    for i in 0..20 {
        create_credential(&client, &format!("c{i}"), credential(Provider::Generic, "pw")).await.unwrap();
    }
    server.kill();
    let server = server.restart();
    assert_eq!(list_credentials(&server.client().await).await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_rpcs_and_closes_the_database_cleanly() {
    // Leases whose token requests the upstream holds for a second are
    // certainly in flight when SIGTERM arrives: they must still be answered.
    const HELD: usize = 4;
    let realm = TokenRealm::start(300, "ci", "drain-pw");
    let proxy = FaultProxy::start(&realm.address);
    proxy.set("/token", Fault::Delay(Duration::from_secs(1)));
    let args = vec!["--insecure-registry".to_owned(), proxy.address.clone()];
    let mut server = Pullpassd::start_with(Options { args, ..Default::default() }).expect("pullpassd starts");
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let upstream = Credential {
        provider: Provider::Generic as i32,
        registry_server: proxy.address.clone(),
        username: "ci".into(),
        secret: "drain-pw".into(),
        ..Default::default()
    };
    client.create_credential("acme", "upstream", upstream).await.expect("create credential");
    let leases: Vec<_> = (0..HELD)
        .map(|i| {
            let (client, image) = (client.clone(), format!("{}/team/app{i}:1", proxy.address));
            tokio::spawn(async move { issue_registry_auth(&client, &image).await })
        })
        .collect();
    // Writes racing the signal: those acknowledged must survive it.
    let mut writes = Vec::new();
    for i in 0..400 {
        let client = client.clone();
        writes.push(tokio::spawn(async move {
            (i, create_credential(&client, &format!("c{i:03}"), credential(Provider::Generic, "pw")).await)
        }));
    }
    let reached = std::time::Instant::now() + Duration::from_secs(10);
    while proxy.faulted() < HELD as u64 && std::time::Instant::now() < reached {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(proxy.faulted(), HELD as u64, "every lease's token request is held upstream");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(server.pid().to_string()).status();
    assert!(leases.iter().all(|lease| !lease.is_finished()), "the leases were in flight at SIGTERM");
    for lease in leases {
        let auth = lease.await.unwrap().expect("a lease in flight at SIGTERM is answered");
        let code = auth.status.as_ref().map_or(0, |status| status.code);
        assert!(code == 0 && !auth.token.is_empty(), "{:?}", auth.status);
    }
    let mut acknowledged = Vec::new();
    for task in writes {
        let (i, result) = task.await.unwrap();
        if result.is_ok() {
            acknowledged.push(format!("workspaces/acme/credentials/c{i:03}"));
        }
    }
    assert!(server.stop(), "exit status 0 after SIGTERM");
    let logs = server.current_logs();
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("draining in-flight RPCs"), "{logs}");
    assert!(logs.contains("database closed"), "{logs}");
    let wal = server.data_dir.join("pullpass.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0, "the WAL is checkpointed on close");
    let leaked = files_containing(&server.data_dir, b"drain-pw");
    assert!(leaked.is_empty(), "the upstream's password in {leaked:?}");
    assert!(!logs.contains("drain-pw"), "the upstream's password in the logs");
    let server = server.restart();
    let stored: Vec<String> = list_credentials(&server.client().await).await.into_iter().map(|c| c.name).collect();
    for name in &acknowledged {
        assert!(stored.contains(name), "{name} was acknowledged but is missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_under_concurrent_writes_restores_to_a_working_server() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    for i in 0..50 {
        create_credential(&client, &format!("before{i:02}"), credential(Provider::Generic, "pw")).await.unwrap();
    }
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                create_credential(&client, &format!("during{i:03}"), credential(Provider::Generic, "pw"))
                    .await
                    .unwrap();
            }
        })
    };
    let backup_dir = tempfile::tempdir().unwrap();
    let backup = backup_dir.path().join("pullpass-backup.db");
    let output = server.command(&["backup", "--to", backup.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("the master key is not in it"));
    writer.await.unwrap();
    let refused = server.command(&["backup", "--to", backup.to_str().unwrap()]);
    assert!(!refused.status.success(), "an existing file is not overwritten without --force");

    let conn = rusqlite::Connection::open(&backup).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    // Restore: the backup plus the key file in a fresh data directory.
    let restored_home = tempfile::tempdir().unwrap();
    let data = restored_home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(&backup, data.join("pullpass.db")).unwrap();
    std::fs::copy(server.data_dir.join("master.key"), data.join("master.key")).unwrap();
    let restored = Pullpassd::start_with(Options { home: Some(restored_home.path().to_owned()), ..Default::default() })
        .expect("restored server starts");
    let token = server.root_token.clone();
    let names: Vec<String> =
        list_credentials(&restored.client_with(Some(&token)).await).await.into_iter().map(|c| c.name).collect();
    for i in 0..50 {
        assert!(names.contains(&format!("workspaces/acme/credentials/before{i:02}")));
    }
    let verify = restored.command(&["keys", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    create_credential(&restored.client_with(Some(&token)).await, "after-restore", credential(Provider::Generic, "pw"))
        .await
        .unwrap();
}

fn output_text(output: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_onto_the_live_database_or_its_files_is_refused_and_the_server_keeps_serving() {
    use std::os::unix::fs::MetadataExt;
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_credential(&client, "before", credential(Provider::Generic, "pw")).await.unwrap();
    let db = server.data_dir.join("pullpass.db");
    let inode = std::fs::metadata(&db).unwrap().ino();
    let elsewhere = tempfile::tempdir().unwrap();
    let link = elsewhere.path().join("looks-harmless.db");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let dotted = server.data_dir.join("..").join("data").join("pullpass.db");
    for (target, named) in [
        (path(&db), "the live database"),
        (path(&dotted), "the live database"),
        (path(&link), "the live database"),
        (path(&server.data_dir.join("pullpass.db-wal")), "the write-ahead log of the live database"),
        (path(&server.data_dir.join("pullpass.db-shm")), "the shared-memory index of the live database"),
        (path(&server.data_dir), "the data directory"),
        (path(&server.data_dir.join("master.key")), "the master key file"),
    ] {
        let refused = server.command(&["backup", "--to", &target, "--force"]);
        let said = output_text(&refused);
        assert!(!refused.status.success(), "{target}: {said}");
        assert!(said.contains("refusing to write the backup") && said.contains(named), "{target}: {said}");
    }
    assert_eq!(std::fs::metadata(&db).unwrap().ino(), inode, "the live database is the same file");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // The server kept its database: what it writes now is there after a restart.
    create_credential(&client, "after", credential(Provider::Generic, "pw")).await.unwrap();
    let server = server.restart();
    let names: Vec<String> = list_credentials(&server.client().await).await.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["workspaces/acme/credentials/after", "workspaces/acme/credentials/before"]);
    let verify = server.command(&["audit", "verify"]);
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn a_backup_that_fails_leaves_the_existing_target_as_it_was_and_no_partial_file() {
    // A "database" that is not one: the copy fails after the target's
    // directory got its temporary file.
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("pullpass.db"), vec![0x5a; 8192]).unwrap();
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("pullpass-backup.db");
    std::fs::write(&target, b"yesterday's good backup").unwrap();
    let failed = pullpass_tests::pullpassd_command(&data, &["backup", "--to", target.to_str().unwrap(), "--force"]);
    assert!(!failed.status.success(), "{}", output_text(&failed));
    assert_eq!(std::fs::read(&target).unwrap(), b"yesterday's good backup");
    let left: Vec<_> = std::fs::read_dir(backups.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("pullpass-backup.db")], "no partial file is left");
    // A directory that does not exist: a clear error, nothing created.
    let nowhere = backups.path().join("missing").join("backup.db");
    let failed = pullpass_tests::pullpassd_command(&data, &["backup", "--to", nowhere.to_str().unwrap()]);
    assert!(output_text(&failed).contains("does not exist"), "{}", output_text(&failed));
    assert!(!nowhere.parent().unwrap().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_backup_replaces_an_existing_file_with_one_that_restores() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_credential(&client, "kept", credential(Provider::Generic, "pw")).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let target = data.join("pullpass.db");
    std::fs::write(&target, b"an older backup").unwrap();
    let done = server.command(&["backup", "--to", target.to_str().unwrap(), "--force"]);
    assert!(done.status.success(), "{}", output_text(&done));
    let left: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("pullpass.db")], "one self-contained file");
    std::fs::copy(server.data_dir.join("master.key"), data.join("master.key")).unwrap();
    let restored = Pullpassd::start_with(Options { home: Some(home.path().to_owned()), ..Default::default() })
        .expect("a server starts on the backup");
    let names: Vec<String> = list_credentials(&restored.client_with(Some(&server.root_token)).await)
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["workspaces/acme/credentials/kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_rpc_writes_one_json_log_line_with_method_code_latency_and_principal() {
    let mut server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_credential(&client, "ok", credential(Provider::Generic, "pw")).await.unwrap();
    let _ = create_credential(&client, "bad id", credential(Provider::Generic, "pw")).await.unwrap_err();
    let anonymous = server.client_with(None).await;
    let _ = list_credentials(&client).await;
    let _ = anonymous
        .credentials()
        .list_credentials(ListCredentialsRequest { parent: "workspaces/acme".into(), ..Default::default() })
        .await
        .unwrap_err();
    server.stop();
    let lines: Vec<serde_json::Value> = server
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "pullpass::rpc")
        .collect();
    let rpc = |method: &str, code: &str| {
        lines.iter().filter(|l| l["method"].as_str().is_some_and(|m| m.ends_with(method)) && l["code"] == code).count()
    };
    assert_eq!(rpc("/CreateWorkspace", "Ok"), 1, "{lines:#?}");
    assert_eq!(rpc("/CreateCredential", "Ok"), 1);
    assert_eq!(rpc("/CreateCredential", "InvalidArgument"), 1);
    assert_eq!(rpc("/ListCredentials", "Ok"), 1);
    assert_eq!(rpc("/ListCredentials", "Unauthenticated"), 1);
    for line in &lines {
        assert!(line["latency_ms"].as_f64().is_some(), "{line}");
        assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{line}");
    }
    let authed = lines
        .iter()
        .find(|l| l["code"] == "Ok" && l["method"].as_str().unwrap().ends_with("/CreateCredential"))
        .unwrap();
    assert!(authed["principal"].as_str().unwrap().starts_with("rootTokens/"), "{authed}");
}

#[test]
fn help_documents_every_flag_and_command() {
    let output = std::process::Command::new(pullpass_tests::binary("pullpassd")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "--dev",
        "--data-dir",
        "--listen",
        "--console-listen",
        "PULLPASS_CONSOLE_LISTEN",
        "--key-file",
        "--config",
        "--log-format",
        "PULLPASS_DATA_DIR",
        "PULLPASS_LISTEN",
        "PULLPASS_MASTER_KEY",
        "keys",
        "backup",
        "tokens",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}
