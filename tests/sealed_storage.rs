//! Secrets stay sealed: never in the database, WAL, logs or responses; a
//! moved ciphertext does not open; a wrong master key is refused before
//! anything is written; key rotation keeps every secret readable, even across
//! a crash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pullpass::v1::{Credential, GetCredentialRequest, ImportDockerConfigRequest, Provider};
use pullpass_client::Client;
use pullpass_tests::fixtures::{TEST_RSA_PKCS8_PEM, credential, google_key_json};
use pullpass_tests::{
    Options, Pullpassd, create_credential, create_workspace, files_containing, list_credentials, pullpassd_command,
};

async fn list_names(client: &Client) -> Vec<String> {
    list_credentials(client).await.into_iter().map(|c| c.name).collect()
}

fn assert_absent(dir: &Path, needle: &str, context: &str) {
    let hits = files_containing(dir, needle.as_bytes());
    assert!(hits.is_empty(), "{context}: `{needle}` found in {hits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_database_wal_logs_or_responses() {
    let mut server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    let mut canaries: Vec<String> = Vec::new();
    let mut responses = String::new();

    for (index, provider) in
        [Provider::DockerHub, Provider::Ghcr, Provider::Gitlab, Provider::Ecr, Provider::Quay, Provider::Generic]
            .into_iter()
            .enumerate()
    {
        let canary = format!("CANARY-{}-7f3e1a{index}", provider.as_str_name());
        let created =
            create_credential(&client, &format!("c{index}"), credential(provider, &canary)).await.expect("create");
        responses.push_str(&format!("{created:?}"));
        canaries.push(canary);
    }
    // The Google key: its private key is the secret.
    let key = google_key_json("ci@pullpass-test.iam.gserviceaccount.com", "https://oauth2.googleapis.com/token");
    create_credential(&client, "google", credential(Provider::Google, &key)).await.expect("create google");
    let pem_line = TEST_RSA_PKCS8_PEM.lines().nth(3).expect("pem body").to_owned();
    canaries.push(pem_line);

    // Rotation of a secret.
    let rotated = client
        .update_credential(
            Credential {
                name: "workspaces/acme/credentials/c0".into(),
                secret: "CANARY-rotated-91c0".into(),
                ..Default::default()
            },
            &["secret"],
        )
        .await
        .expect("rotate");
    responses.push_str(&format!("{rotated:?}"));
    canaries.push("CANARY-rotated-91c0".into());

    // Import.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("bob:CANARY-imported-55d1");
    let config = serde_json::json!({"auths": {"imported.example.com": {"auth": auth}}}).to_string();
    let imported = client
        .credentials()
        .import_docker_config(ImportDockerConfigRequest {
            parent: "workspaces/acme".into(),
            config_json: config,
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner();
    assert_eq!(imported.created_count, 1);
    responses.push_str(&format!("{imported:?}"));
    canaries.push("CANARY-imported-55d1".into());

    // Refused requests that carry secrets: the errors must not echo them.
    let refused = [
        Credential {
            registry_server: "user:CANARY-userinfo-0a1b@registry.example.com".into(),
            ..credential(Provider::Generic, "CANARY-refused-1")
        },
        credential(Provider::Google, r#"{"private_key": "CANARY-refused-2", "client_email": "x@y"}"#),
        Credential {
            token_realm_allowlist: vec!["https://u:CANARY-realm-3c@auth.example.com".into()],
            ..credential(Provider::Generic, "CANARY-refused-4")
        },
    ];
    for (index, c) in refused.into_iter().enumerate() {
        let status = create_credential(&client, &format!("refused{index}"), c).await.expect_err("must be refused");
        responses.push_str(&format!("{status:?}"));
    }
    canaries.extend(
        ["CANARY-userinfo-0a1b", "CANARY-refused-1", "CANARY-refused-2", "CANARY-realm-3c", "CANARY-refused-4"]
            .map(String::from),
    );

    for name in list_names(&client).await {
        let got = client.credentials().get_credential(GetCredentialRequest { name }).await.expect("get").into_inner();
        responses.push_str(&format!("{got:?}"));
        assert!(got.secret.is_empty());
    }

    // While running: database, WAL and shared memory.
    for canary in &canaries {
        assert!(!responses.contains(canary.as_str()), "a response carries `{canary}`");
        assert_absent(&server.data_dir, canary, "data dir while running");
    }
    assert_absent(&server.data_dir, &server.root_token, "data dir while running (root token)");
    let home = server.home.clone();
    let root_token = server.root_token.clone();
    assert!(server.stop(), "clean exit");
    for canary in &canaries {
        assert_absent(&server.data_dir, canary, "data dir after shutdown");
    }
    let logs = server.logs();
    assert!(logs.contains("CreateCredential"), "the RPC log lines are there: {logs}");
    for canary in canaries.iter().chain([&root_token]) {
        assert!(!logs.contains(canary.as_str()), "logs carry `{canary}`");
    }
    let stdout = server.stdout();
    for canary in &canaries {
        assert!(!stdout.contains(canary.as_str()), "stdout carries `{canary}`");
    }
    drop(home);
}

/// Runs SQL against the (stopped) server's database.
fn sql(data_dir: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(data_dir.join("pullpass.db")).expect("open db");
    conn.execute_batch(statement).expect("sql");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_secret_or_wrapped_key_moved_to_another_row_fails_to_open_naming_the_credential() {
    for column in ["secret_ciphertext", "secret_wrapped_dek"] {
        let mut server = Pullpassd::start();
        let client = server.client().await;
        create_workspace(&client, "acme").await;
        for id in ["alpha", "bravo", "charlie"] {
            create_credential(&client, id, credential(Provider::Generic, &format!("pw-{id}"))).await.expect("create");
        }
        let verify = server.command(&["keys", "verify"]);
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
        server.stop();
        sql(
            &server.data_dir,
            &format!(
                "UPDATE credentials SET {column} = (SELECT {column} FROM credentials WHERE credential_id = 'alpha') \
                 WHERE credential_id = 'bravo'"
            ),
        );
        let verify = server.command(&["keys", "verify"]);
        let out = String::from_utf8_lossy(&verify.stdout).into_owned() + &String::from_utf8_lossy(&verify.stderr);
        assert!(!verify.status.success(), "{column}: {out}");
        assert!(out.contains("workspaces/acme/credentials/bravo cannot be opened"), "{column}: {out}");
        assert!(!out.contains("credentials/alpha cannot"), "{column}: {out}");
        assert!(!out.contains("credentials/charlie cannot"), "{column}: {out}");
        assert!(out.contains("2 secret(s) open, 1 do not"), "{column}: {out}");
        // Nothing else breaks: the server starts and serves the others.
        let server = server.restart();
        let client = server.client().await;
        assert_eq!(list_names(&client).await.len(), 3);
        create_credential(&client, "delta", credential(Provider::Generic, "pw-delta"))
            .await
            .expect("create after tamper");
    }
}

/// Database files and a digest of their bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (usize, u64)> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("pullpass.db")))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            let mut hasher = DefaultHasher::new();
            bytes.hash(&mut hasher);
            (p.clone(), (bytes.len(), hasher.finish()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_master_key_is_refused_at_start_up_and_the_database_stays_byte_identical() {
    let mut server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    create_credential(&client, "keep", credential(Provider::Generic, "pw-keep")).await.expect("create");
    assert!(server.stop());
    let key_file = server.data_dir.join("master.key");
    let good_key = std::fs::read_to_string(&key_file).expect("key file");
    let before = snapshot(&server.data_dir);
    assert!(before.contains_key(&server.data_dir.join("pullpass.db")));
    let home = server.keep_home();

    let expect_refused = |needle: &str, args: Vec<String>, env: Vec<(String, String)>| {
        let failure =
            Pullpassd::start_with(Options { home: Some(server.home.clone()), args, env, ..Default::default() })
                .expect_err("start must be refused");
        assert_eq!(failure.status.and_then(|s| s.code()), Some(1), "{failure:?}");
        assert!(failure.stderr.contains(needle), "expected `{needle}` in: {}", failure.stderr);
        assert_eq!(snapshot(&server.data_dir), before, "database files changed");
    };

    // Same key id, other key bytes.
    let (id, _) = good_key.lines().find(|l| !l.starts_with('#')).unwrap().split_once(':').unwrap();
    std::fs::write(&key_file, format!("{id}:{}\n", "A".repeat(43))).unwrap();
    expect_refused("is not the key this database was sealed with", vec![], vec![]);

    // Another key file altogether.
    std::fs::remove_file(&key_file).unwrap();
    let generated =
        pullpassd_command(&server.data_dir, &["keys", "generate", "--key-file", key_file.to_str().unwrap()]);
    assert!(generated.status.success(), "{generated:?}");
    expect_refused("which master key file", vec![], vec![]);

    // A deleted key file (dev mode would generate a new one): refused too.
    std::fs::remove_file(&key_file).unwrap();
    expect_refused("does not hold", vec![], vec![]);
    std::fs::remove_file(&key_file).unwrap();

    // A readable-by-others key file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&key_file, &good_key).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    expect_refused("chmod 600", vec![], vec![]);
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The right key, given in the environment instead of a file, serves.
    let server = Pullpassd::start_with(Options {
        home: Some(server.home.clone()),
        env: vec![("PULLPASS_MASTER_KEY".into(), good_key.clone())],
        args: vec![],
        ..Default::default()
    })
    .expect("the right key starts the server");
    let client = server.client_with(Some(&read_root_token(&server))).await;
    assert_eq!(list_names(&client).await, vec!["workspaces/acme/credentials/keep"]);
    drop(home);
}

fn read_root_token(server: &Pullpassd) -> String {
    server.stdout().lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("root token").to_owned()
}

#[test]
fn without_dev_mode_missing_key_material_is_an_error_that_says_how_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(pullpass_tests::binary("pullpassd"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env_remove("PULLPASS_MASTER_KEY")
        .env_remove("PULLPASS_KEY_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pullpassd keys generate --key-file"), "{stderr}");
    assert!(!dir.path().join("pullpass.db").exists(), "nothing may be created");
}

fn key_ids_in_use(data_dir: &Path) -> BTreeMap<String, i64> {
    let conn = rusqlite::Connection::open(data_dir.join("pullpass.db")).unwrap();
    let mut statement = conn.prepare("SELECT secret_kek_id, count(*) FROM credentials GROUP BY 1").unwrap();
    statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_every_secret_readable_and_resumes_after_a_crash() {
    let server = Pullpassd::start();
    let client = server.client().await;
    create_workspace(&client, "acme").await;
    for i in 0..23 {
        create_credential(&client, &format!("old{i:02}"), credential(Provider::Generic, &format!("pw{i}")))
            .await
            .unwrap();
    }
    // Add a key and restart so the server loads it; new secrets use it.
    let added = server.command(&["keys", "add"]);
    assert!(added.status.success(), "{added:?}");
    let server = server.restart();
    let client = server.client().await;
    create_credential(&client, "new", credential(Provider::Generic, "pw-new")).await.unwrap();
    let before = key_ids_in_use(&server.data_dir);
    assert_eq!(before.len(), 2, "{before:?}");

    // Rotate online, crash after two batches of five.
    let crashed = server.command(&["keys", "rotate", "--batch-size", "5", "--fault-abort-after-batches", "2"]);
    assert!(!crashed.status.success());
    assert!(String::from_utf8_lossy(&crashed.stdout).contains("rotated 10/23"), "{crashed:?}");
    let midway = key_ids_in_use(&server.data_dir);
    assert_eq!(midway.values().copied().collect::<Vec<_>>().iter().sum::<i64>(), 24);
    assert!(midway.values().any(|&n| n == 13), "10 of 23 moved, 13 left under the old key: {midway:?}");
    let verify = server.command(&["keys", "verify"]);
    assert!(verify.status.success(), "every secret opens mid-rotation: {verify:?}");

    // Resume.
    let resumed = server.command(&["keys", "rotate"]);
    let out = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{resumed:?}");
    assert!(out.contains("rotating 13 data key(s)"), "{out}");
    assert_eq!(key_ids_in_use(&server.data_dir).len(), 1);
    let verify = server.command(&["keys", "verify"]);
    assert!(String::from_utf8_lossy(&verify.stdout).contains("24 secret(s) open, 0 do not"), "{verify:?}");
    // The running server still serves.
    assert_eq!(list_names(&client).await.len(), 24);

    // The old key can now be dropped from the key file.
    let mut server = server;
    server.stop();
    let key_file = server.data_dir.join("master.key");
    let text = std::fs::read_to_string(&key_file).unwrap();
    let keys: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(keys.len(), 2);
    std::fs::write(&key_file, format!("{}\n", keys[1])).unwrap();
    let server = server.restart();
    let verify = server.command(&["keys", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}
