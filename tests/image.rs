//! The container image, built and run for real (issue 27).
//!
//! `scripts/build-image.sh` builds it with buildah from scratch; these tests
//! build it from the already-built binaries next to the test (target/debug
//! in CI: the script strips them as it would release ones), once for every
//! test process of one build (an archive under target/tmp keyed by the
//! binaries and the scripts, made under a file lock), and run it with
//! podman. Every test has its own podman storage (vfs, root and runroot in a
//! temporary directory) and its containers publish only on 127.0.0.1; all is
//! removed when the test ends. podman runs here only with low rlimits
//! (`--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`).
//!
//! packaging/Containerfile stays for docker builds. Its build stage needs a
//! Rust base image, which cannot be pulled here, so the layout test runs
//! that stage's `scripts/image-rootfs.sh` command as written and builds the
//! runtime stage, as written, with podman on top of its output; the two
//! images must have the same files and the same configuration.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::Hasher;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pullpass_tests::{binary, grpcurl, grpcurl_call, repo_root};
use tempfile::TempDir;

/// The name the tests give the script's image.
const IMAGE: &str = "localhost/pullpass:test";
const BINARIES: [&str; 4] =
    ["pullpassd", "pullpass", "docker-credential-pullpass", "pullpass-kubelet-credential-provider"];
/// This VM refuses raising rlimits in a container's init.
const ULIMITS: [&str; 4] = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
const RUNTIME_UID: u32 = 65532;

/// A podman (and buildah) with its own storage under a temporary directory.
struct Podman {
    dir: TempDir,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pullpass-image-").tempdir().expect("temp dir");
        let podman = Self { dir };
        let info = podman.run(&["info", "--format", "{{.Store.GraphDriverName}}"]);
        assert!(
            info.status.success(),
            "podman does not run here (scripts/install-test-deps.sh installs it): {}",
            text(&info)
        );
        podman
    }

    /// Storage flags, shared by podman and buildah.
    fn storage(&self) -> Vec<String> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec!["--root".into(), path("root"), "--runroot".into(), path("run"), "--storage-driver".into(), "vfs".into()]
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("timeout");
        command
            .arg("300")
            .arg(program)
            .env("HOME", self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join(".config"))
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command("podman")
            .args(self.storage())
            .args(["--events-backend", "file", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .output()
            .expect("podman (installed by scripts/install-test-deps.sh)")
    }

    /// Runs podman and returns its standard output; panics on failure.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "podman {args:?} failed: {}", text(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// This store with the script's image in it.
    fn with_image() -> Self {
        let podman = Self::new();
        podman.ok(&["load", "--quiet", "--input", &image_archive().display().to_string()]);
        podman
    }

    /// Where podman mounts `image` (vfs: a plain directory); unmounted when
    /// the store is dropped.
    fn mount(&self, image: &str) -> PathBuf {
        PathBuf::from(self.ok(&["image", "mount", image]).trim())
    }

    /// `podman inspect` of an image or container, parsed.
    fn inspect(&self, kind: &str, name: &str) -> serde_json::Value {
        let json: serde_json::Value =
            serde_json::from_str(&self.ok(&[kind, "inspect", name])).expect("podman inspect prints JSON");
        json[0].clone()
    }

    /// A master key file the image's user may read (0400, owned by 65532).
    fn key_file(&self) -> PathBuf {
        let path = self.dir.path().join("master.key");
        let made = Command::new(binary("pullpassd"))
            .args(["keys", "generate", "--key-file"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .expect("pullpassd keys generate");
        assert!(made.status.success(), "{}", text(&made));
        std::os::unix::fs::chown(&path, Some(RUNTIME_UID), Some(RUNTIME_UID)).expect("chown the key file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod the key file");
        path
    }

    /// The arguments that give a container the data volume and the key file.
    fn server_args(&self, volume: &str, key: &Path) -> Vec<String> {
        let mut args: Vec<String> = ULIMITS.iter().map(|s| s.to_string()).collect();
        args.extend([
            "-v".into(),
            format!("{volume}:/var/lib/pullpass"),
            "-v".into(),
            format!("{}:/run/secrets/master.key:ro", key.display()),
            "-e".into(),
            "PULLPASS_KEY_FILE=/run/secrets/master.key".into(),
        ]);
        args
    }

    /// Starts the image's default command (gRPC on 0.0.0.0:50051 in the
    /// container, published on a free port of 127.0.0.1; plaintext, as
    /// behind a TLS-terminating proxy) and waits until it is SERVING.
    /// Returns the host address.
    fn start_server(&self, name: &str, volume: &str, key: &Path) -> String {
        let mut args: Vec<String> = vec!["run".into(), "--detach".into(), "--name".into(), name.into()];
        args.extend(self.server_args(volume, key));
        args.extend([
            // No systemd here to time the health checks: the test runs them.
            "--health-interval".into(),
            "disable".into(),
            "-p".into(),
            "127.0.0.1::50051".into(),
            "-e".into(),
            "PULLPASS_INSECURE_PLAINTEXT=true".into(),
            IMAGE.into(),
        ]);
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let address = self.ok(&["port", name, "50051/tcp"]).trim().to_owned();
        assert!(address.starts_with("127.0.0.1:"), "published on {address}, expected loopback only");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = Command::new(grpcurl())
                .args(["-plaintext", "-max-time", "5", &address, "grpc.health.v1.Health/Check"])
                .stdin(Stdio::null())
                .output()
                .expect("run grpcurl");
            if String::from_utf8_lossy(&health.stdout).contains("\"SERVING\"") {
                return address;
            }
            let running = self.inspect("container", name)["State"]["Running"].as_bool();
            assert!(running == Some(true), "the container {name} stopped: {}", text(&self.run(&["logs", name])));
            assert!(
                Instant::now() < deadline,
                "{name} not SERVING on {address} within 60 s: {}\n{}",
                text(&health),
                text(&self.run(&["logs", name]))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--all", "--time", "0"]);
        let _ = self.run(&["image", "unmount", "--all"]);
        let _ = self.run(&["volume", "rm", "--force", "--all"]);
    }
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The directory holding the binaries the tests run (target/debug in CI).
fn binaries_dir() -> PathBuf {
    binary("pullpassd").parent().expect("a directory").to_owned()
}

/// A `docker save` archive of the script's image built from
/// [`binaries_dir`]: built once per set of inputs, shared by the test
/// processes (nextest runs each test in its own).
fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let binaries = binaries_dir();
        let scripts = [repo_root().join("scripts/build-image.sh"), repo_root().join("scripts/image-rootfs.sh")];
        let mut key = Fnv::default();
        key.write(binaries.as_os_str().as_encoded_bytes());
        for name in BINARIES {
            let meta = std::fs::metadata(binaries.join(name)).expect("binary");
            key.write_u64(meta.len());
            key.write_i64(meta.mtime());
            key.write_i64(meta.mtime_nsec());
        }
        for script in &scripts {
            key.write(&std::fs::read(script).expect("script"));
        }
        let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pullpass-image");
        std::fs::create_dir_all(&cache).expect("cache dir");
        let lock = File::create(cache.join("lock")).expect("lock file");
        lock.lock().expect("lock the image cache");
        let archive = cache.join(format!("{:016x}.tar", key.finish()));
        if archive.is_file() {
            return archive;
        }
        for old in std::fs::read_dir(&cache).expect("cache dir").flatten() {
            if old.path().extension().is_some_and(|e| e == "tar" || e == "partial") {
                let _ = std::fs::remove_file(old.path());
            }
        }
        let started = Instant::now();
        let builder = Podman::new();
        let built = builder
            .command(&repo_root().join("scripts/build-image.sh").display().to_string())
            .args(["--binaries", &binaries.display().to_string(), "--tag", IMAGE, "--no-sizes"])
            .arg("--debug-dir")
            .arg(builder.dir.path().join("debug"))
            .args(builder.storage())
            .output()
            .expect("run scripts/build-image.sh");
        assert!(built.status.success(), "scripts/build-image.sh failed: {}", text(&built));
        let partial = archive.with_extension("partial");
        builder.ok(&[
            "save",
            "--quiet",
            "--format",
            "docker-archive",
            "--output",
            &partial.display().to_string(),
            IMAGE,
        ]);
        std::fs::rename(&partial, &archive).expect("rename the archive");
        eprintln!("image built from {} in {:?}: {}", binaries.display(), started.elapsed(), text(&built).trim());
        archive
    })
}

/// FNV-1a: a stable hash for the cache key (std's changes between releases).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What a file in an image is: kind, permission bits, owner, and size
/// (regular files) or target (symbolic links). Times are left out.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    link: Option<PathBuf>,
}

/// Every path under `root` (as `/a/b`), with what it is.
fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for item in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = item.path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let kind = if meta.file_type().is_symlink() {
                "link"
            } else if meta.is_dir() {
                "dir"
            } else if meta.is_file() {
                "file"
            } else {
                "other"
            };
            let name = format!("/{}", path.strip_prefix(root).expect("under root").display());
            out.insert(
                name,
                Entry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if kind == "file" { meta.len() } else { 0 },
                    link: (kind == "link").then(|| std::fs::read_link(&path).expect("link")),
                },
            );
            if kind == "dir" {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The ELF section names of a file (`readelf -S --wide`), with their
/// offsets and sizes.
fn sections(path: &Path) -> BTreeMap<String, (u64, u64)> {
    let out = Command::new("readelf").args(["-S", "--wide"]).arg(path).output().expect("readelf (binutils)");
    assert!(out.status.success(), "readelf {}: {}", path.display(), text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(']').map(|(_, rest)| rest.split_whitespace().collect::<Vec<_>>()))
        .filter(|fields| fields.len() >= 5 && fields[0].starts_with('.'))
        .map(|f| {
            let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
            (f[0].to_owned(), (hex(f[3]), hex(f[4])))
        })
        .collect()
}

/// Section names that hold debug information (not `.debug_gdb_scripts`,
/// a loaded section naming gdb's pretty-printers).
fn debug_sections(path: &Path) -> Vec<String> {
    sections(path)
        .into_keys()
        .filter(|name| name == ".symtab" || (name.starts_with(".debug_") && name != ".debug_gdb_scripts"))
        .collect()
}

/// CRC-32 (IEEE) of a file, as `.gnu_debuglink` records the debug file's:
/// computed by Python's zlib (fast, and not ours).
fn crc32(path: &Path) -> u32 {
    let out = Command::new("python3")
        .args(["-c", "import sys, zlib; print(zlib.crc32(open(sys.argv[1], 'rb').read()))"])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a CRC")
}

/// The Containerfile's instructions, continuation lines joined, comments
/// left out: (INSTRUCTION, arguments).
fn containerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (pending.is_empty() && trimmed.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let (word, rest) = pending.split_once(' ').unwrap_or((&pending, ""));
                out.push((word.to_uppercase(), rest.trim().to_owned()));
                pending.clear();
            }
        }
    }
    out
}

#[test]
fn the_image_runs_pullpassd_version_and_the_clients() {
    let podman = Podman::with_image();
    let host = Command::new(binary("pullpassd")).arg("--version").output().expect("pullpassd --version");
    let mut run = vec!["run", "--rm"];
    run.extend(ULIMITS);
    let version = podman.ok(&[run.clone(), vec![IMAGE, "--version"]].concat());
    assert_eq!(version, String::from_utf8_lossy(&host.stdout), "pullpassd --version in the image");
    assert!(version.starts_with("pullpassd "), "{version}");
    // The clients link the same libraries and run too.
    for (client, arg) in [
        ("pullpass", "--version"),
        ("pullpass-kubelet-credential-provider", "--version"),
        ("docker-credential-pullpass", "version"),
    ] {
        let entrypoint = format!("/usr/local/bin/{client}");
        let out = podman.ok(&[run.clone(), vec!["--entrypoint", &entrypoint, IMAGE, arg]].concat());
        assert!(out.contains(env!("CARGO_PKG_VERSION")), "{client} {arg}: {out}");
    }
}

#[test]
fn it_serves_grpc_health_from_a_data_volume_and_key_file_as_the_nonroot_user() {
    let podman = Podman::with_image();
    let key = podman.key_file();
    let address = podman.start_server("pullpassd", "pullpass-data", &key);
    // The process runs as 65532:65532 (seen from the host's /proc).
    let pid = podman.inspect("container", "pullpassd")["State"]["Pid"].as_u64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let ids = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|rest| rest.split_whitespace().map(|n| n.parse::<u32>().expect("id")).collect::<Vec<_>>())
            .expect("Uid/Gid lines")
    };
    assert_eq!(ids("Uid:"), [RUNTIME_UID; 4], "real, effective, saved and filesystem uid");
    assert_eq!(ids("Gid:"), [RUNTIME_UID; 4], "real, effective, saved and filesystem gid");
    assert!(status.lines().any(|l| l.starts_with("Name:") && l.contains("pullpassd")), "{status}");
    // The image's HEALTHCHECK (grpc.health.v1 on 127.0.0.1:50051 inside)
    // answers healthy.
    let health = podman.run(&["healthcheck", "run", "pullpassd"]);
    assert!(health.status.success(), "podman healthcheck run: {}", text(&health));
    // grpc health over the published port, the server's whole health too.
    let checked = grpcurl_call(None, &[&address, "grpc.health.v1.Health/Check"]);
    assert!(String::from_utf8_lossy(&checked.stdout).contains("\"SERVING\""), "{}", text(&checked));
    // The new volume took the image's data directory: 65532's, 0700, and
    // the database in it is the runtime user's.
    let volume = PathBuf::from(
        podman.ok(&["volume", "inspect", "pullpass-data", "--format", "{{.Mountpoint}}"]).trim().to_owned(),
    );
    let meta = std::fs::metadata(&volume).expect("volume");
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (RUNTIME_UID, RUNTIME_UID, 0o700), "{volume:?}");
    let db = std::fs::metadata(volume.join("pullpass.db")).expect("the SQLite database in the volume");
    assert_eq!((db.uid(), db.mode() & 0o077), (RUNTIME_UID, 0), "pullpass.db: the runtime user's, private");
}

#[test]
fn it_keeps_its_data_and_tokens_across_a_restart() {
    let podman = Podman::with_image();
    let key = podman.key_file();
    // A production start: the operator mints the root token with the image
    // itself, on the volume, before the server first runs.
    let mut mint = vec!["run".to_owned(), "--rm".to_owned()];
    mint.extend(podman.server_args("pullpass-data", &key));
    mint.extend([IMAGE, "tokens", "create-root", "--data-dir", "/var/lib/pullpass"].map(String::from));
    let minted = podman.ok(&mint.iter().map(String::as_str).collect::<Vec<_>>());
    let token = minted.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("a root token").to_owned();

    let address = podman.start_server("first", "pullpass-data", &key);
    let created = grpcurl_call(
        Some(&token),
        &[
            "-d",
            r#"{"workspace_id":"acme","workspace":{"kind":"ORGANIZATION","display_name":"Acme Inc."}}"#,
            &address,
            "pullpass.v1.AccessService/CreateWorkspace",
        ],
    );
    assert!(String::from_utf8_lossy(&created.stdout).contains("workspaces/acme"), "{}", text(&created));
    // SIGTERM (the image's STOPSIGNAL): it drains and exits 0.
    let stopping = Instant::now();
    podman.ok(&["stop", "--time", "45", "first"]);
    let state = &podman.inspect("container", "first")["State"];
    assert_eq!(state["ExitCode"].as_i64(), Some(0), "exit after SIGTERM: {state}");
    eprintln!("stopped in {:?}", stopping.elapsed());
    podman.ok(&["rm", "first"]);

    // A new container on the same volume (as after an upgrade).
    let address = podman.start_server("second", "pullpass-data", &key);
    let listed = grpcurl_call(Some(&token), &[&address, "pullpass.v1.AccessService/ListWorkspaces"]);
    let listed_text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed_text.contains("workspaces/acme") && listed_text.contains("Acme Inc."), "{}", text(&listed));
    let denied = grpcurl_call(Some("pp_not_a_token"), &[&address, "pullpass.v1.AccessService/ListWorkspaces"]);
    assert!(text(&denied).contains("Unauthenticated"), "a made-up token: {}", text(&denied));
}

#[test]
fn maintenance_commands_in_the_running_container_use_the_served_database() {
    let podman = Podman::with_image();
    let key = podman.key_file();
    let address = podman.start_server("pullpassd", "pullpass-data", &key);
    // No --data-dir: the image's PULLPASS_DATA_DIR names the volume, so
    // these act on the database the server has open, not on a new
    // ./pullpass-data under the working directory.
    let exec = |args: &[&str]| podman.ok(&[&["exec", "pullpassd", "pullpassd"], args].concat());
    let minted = exec(&["tokens", "create-root", "--description", "minted by podman exec"]);
    let token = minted.lines().find_map(|l| l.strip_prefix("PULLPASS_TOKEN=")).expect("a root token").to_owned();
    let name = minted.split_whitespace().find(|w| w.starts_with("rootTokens/")).expect("the token's name");
    let listed = exec(&["tokens", "list-root"]);
    assert!(listed.lines().any(|l| l.starts_with(name) && l.contains("minted by podman exec")), "{listed}");
    // The server accepts the token: the same database.
    let workspaces = grpcurl_call(Some(&token), &[&address, "pullpass.v1.AccessService/ListWorkspaces"]);
    assert!(workspaces.status.success(), "ListWorkspaces with the exec-minted token: {}", text(&workspaces));
    let keys = exec(&["keys", "list"]);
    assert!(!keys.trim().is_empty(), "keys list printed nothing");
    // Nothing but the served database in the volume: no second one.
    let volume = PathBuf::from(
        podman.ok(&["volume", "inspect", "pullpass-data", "--format", "{{.Mountpoint}}"]).trim().to_owned(),
    );
    assert!(volume.join("pullpass.db").is_file(), "no database in the volume");
    assert!(!volume.join("pullpass-data").exists(), "a second data directory in the volume: {volume:?}");
    let env = &podman.inspect("container", "pullpassd")["Config"]["Env"];
    assert!(
        env.as_array().expect("Env").iter().any(|v| v == "PULLPASS_DATA_DIR=/var/lib/pullpass"),
        "the container's environment: {env}"
    );
}

#[test]
fn it_has_no_shell_and_its_binaries_carry_no_debug_info() {
    let podman = Podman::with_image();
    let mut run = vec!["run", "--rm"];
    run.extend(ULIMITS);
    let shell = podman.run(&[run, vec!["--entrypoint", "/bin/sh", IMAGE, "-c", "true"]].concat());
    assert!(!shell.status.success(), "/bin/sh ran in the image");
    assert!(text(&shell).contains("no such file or directory"), "{}", text(&shell));

    let root = podman.mount(IMAGE);
    let files = tree(&root);
    for name in ["/bin", "/bin/sh", "/usr/bin", "/sbin"] {
        assert!(!files.contains_key(name), "{name} is in the image");
    }
    // Nothing but the binaries, the libraries they link, and /etc's files.
    let etc = ["/etc/group", "/etc/nsswitch.conf", "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt"];
    for (name, entry) in files.iter().filter(|(_, e)| e.kind != "dir") {
        let base = name.rsplit('/').next().unwrap_or_default();
        let allowed = etc.contains(&name.as_str())
            || name.strip_prefix("/usr/local/bin/").is_some_and(|b| BINARIES.contains(&b))
            || ((name.starts_with("/lib/") || name.starts_with("/lib64/")) && base.contains(".so"));
        assert!(allowed, "unexpected {name} ({entry:?}) in the image");
        assert!(!["sh", "bash", "dash", "busybox", "apt", "dpkg"].contains(&base), "{name}");
    }
    for name in etc {
        assert!(files.contains_key(name), "{name} missing");
    }
    assert!(
        files.keys().any(|n| n.starts_with("/lib64/ld-linux")),
        "no dynamic loader: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "{passwd}");
    let group = std::fs::read_to_string(root.join("etc/group")).expect("group");
    assert!(group.lines().any(|l| l.starts_with("nonroot:x:65532:")), "{group}");

    for name in BINARIES {
        let path = root.join("usr/local/bin").join(name);
        assert_eq!(debug_sections(&path), Vec::<String>::new(), "{name}: debug sections in the image");
        assert!(sections(&path).contains_key(".gnu_debuglink"), "{name}: no link to its debug file");
        let built = std::fs::metadata(binaries_dir().join(name)).expect("built binary").len();
        let stripped = std::fs::metadata(&path).expect("image binary").len();
        assert!(stripped < built, "{name}: {stripped} bytes in the image, {built} as built");
    }
}

#[test]
fn the_debug_info_is_kept_apart_and_the_stripped_binaries_link_to_it() {
    let out = tempfile::Builder::new().prefix("pullpass-rootfs-").tempdir().expect("temp dir");
    let dir = |name: &str| out.path().join(name).display().to_string();
    let made = Command::new(repo_root().join("scripts/image-rootfs.sh"))
        .args(["--from", &binaries_dir().display().to_string()])
        .args(["--bin", &dir("bin"), "--debug", &dir("debug"), "--rootfs", &dir("rootfs"), "--data", &dir("data")])
        .stdin(Stdio::null())
        .output()
        .expect("scripts/image-rootfs.sh");
    assert!(made.status.success(), "{}", text(&made));
    for name in BINARIES {
        let stripped = out.path().join("bin").join(name);
        let debug = out.path().join("debug").join(format!("{name}.debug"));
        assert!(
            sections(&debug).contains_key(".debug_line"),
            "{name}.debug has no line tables: {:?}",
            sections(&debug).keys()
        );
        assert_eq!(debug_sections(&stripped), Vec::<String>::new(), "{name}: stripped");
        // .gnu_debuglink: the file name, NUL, padding to 4, CRC-32 of the file.
        let (offset, size) = sections(&stripped)[".gnu_debuglink"];
        let bytes = std::fs::read(&stripped).expect("binary");
        let link = &bytes[offset as usize..(offset + size) as usize];
        let file_name = format!("{name}.debug");
        assert_eq!(&link[..file_name.len()], file_name.as_bytes(), "{name}: links {link:?}");
        let crc = u32::from_le_bytes(link[link.len() - 4..].try_into().expect("4 bytes"));
        assert_eq!(crc, crc32(&debug), "{name}: the link's CRC");
    }
}

#[test]
fn the_containerfile_and_the_script_make_the_same_image() {
    let containerfile = std::fs::read_to_string(repo_root().join("packaging/Containerfile")).expect("Containerfile");
    let instructions = containerfile_instructions(&containerfile);
    let froms: Vec<&String> = instructions.iter().filter(|(w, _)| w == "FROM").map(|(_, a)| a).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage: {froms:?}");
    let build_stage = froms[0].split_whitespace().last().expect("the build stage's name");
    assert!(froms[1].starts_with("scratch "), "the runtime stage is FROM scratch: {}", froms[1]);

    // Both build the same binaries the same way: Cargo.toml's image profile
    // (release with LTO, for size), the script by default.
    let script = std::fs::read_to_string(repo_root().join("scripts/build-image.sh")).expect("build-image.sh");
    let cargo = "--locked -p pullpass-server -p pullpass-client --bins";
    let run = instructions
        .iter()
        .find(|(w, a)| w == "RUN" && a.contains("scripts/image-rootfs.sh"))
        .map(|(_, a)| a.clone())
        .expect("the build stage runs scripts/image-rootfs.sh");
    assert!(run.contains(&format!("cargo build --profile image {cargo}")), "{run}");
    assert!(script.contains(cargo), "scripts/build-image.sh builds with {cargo}");
    assert!(script.contains("profile=image "), "scripts/build-image.sh builds with --profile image by default");
    assert!(script.contains("image) cargo_profile=(--profile image); binaries=$target/image ;;"), "{script}");
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).expect("Cargo.toml");
    let profile = manifest.split("[profile.image]").nth(1).expect("Cargo.toml has [profile.image]");
    assert!(profile.trim_start().starts_with("inherits = \"release\""), "[profile.image]{profile}");

    // The build stage's scripts/image-rootfs.sh command as written, its
    // /out in a directory here and --from the binaries the tests run.
    let context = tempfile::Builder::new().prefix("pullpass-containerfile-").tempdir().expect("temp dir");
    let command = run.split("scripts/image-rootfs.sh").nth(1).expect("arguments");
    let words: Vec<&str> = command.split_whitespace().take_while(|w| *w != "&&").collect();
    let args: Vec<String> = words
        .chunks(2)
        .flat_map(|pair| {
            let value = match pair {
                ["--from", _] => binaries_dir().display().to_string(),
                [_, path] => {
                    let relative = path.strip_prefix("/out/").unwrap_or_else(|| panic!("{path} is not under /out"));
                    context.path().join("out").join(relative).display().to_string()
                }
                _ => panic!("odd arguments to scripts/image-rootfs.sh: {words:?}"),
            };
            [pair[0].to_owned(), value]
        })
        .collect();
    let laid = Command::new(repo_root().join("scripts/image-rootfs.sh"))
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("scripts/image-rootfs.sh");
    assert!(laid.status.success(), "{}", text(&laid));
    // The runtime stage verbatim, after a stand-in build stage holding /out.
    let runtime_from = containerfile.lines().position(|l| l.starts_with("FROM scratch")).expect("FROM scratch line");
    let runtime: Vec<&str> = containerfile.lines().skip(runtime_from).collect();
    let stand_in = format!("FROM scratch AS {build_stage}\nCOPY out/ /out/\n{}\n", runtime.join("\n"));
    std::fs::write(context.path().join("Containerfile"), stand_in).expect("write");

    let podman = Podman::with_image();
    let built = podman.run(&[
        "build",
        "--pull=never",
        "--format",
        "docker",
        "--identity-label=false",
        "--file",
        &context.path().join("Containerfile").display().to_string(),
        "--tag",
        "localhost/pullpass-containerfile:test",
        &context.path().display().to_string(),
    ]);
    assert!(built.status.success(), "podman build of the Containerfile's runtime stage: {}", text(&built));

    // The same configuration...
    let script_image = podman.inspect("image", IMAGE);
    let containerfile_image = podman.inspect("image", "localhost/pullpass-containerfile:test");
    for field in ["Config", "Healthcheck", "Architecture", "Os", "User"] {
        assert_eq!(
            script_image[field], containerfile_image[field],
            "{field}: scripts/build-image.sh (left) and packaging/Containerfile (right) differ"
        );
    }
    let config = &script_image["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/pullpassd"]));
    assert!(script_image["Healthcheck"]["Test"][0] == "CMD", "{}", script_image["Healthcheck"]);

    // ... and the same files, owners and modes.
    let script_files = tree(&podman.mount(IMAGE));
    let containerfile_files = tree(&podman.mount("localhost/pullpass-containerfile:test"));
    let only = |a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>| {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} {} {:04o} {}:{} {} bytes {:?}", v.kind, v.mode, v.uid, v.gid, v.size, v.link))
            .collect::<Vec<_>>()
    };
    assert!(
        script_files == containerfile_files,
        "layouts differ:\n  script only or different: {:#?}\n  Containerfile only or different: {:#?}",
        only(&script_files, &containerfile_files),
        only(&containerfile_files, &script_files)
    );
    // What the runtime stage declares is there.
    let data = &script_files["/var/lib/pullpass"];
    assert_eq!((data.kind, data.uid, data.gid, data.mode), ("dir", RUNTIME_UID, RUNTIME_UID, 0o700));
    for (word, value) in instructions.iter().skip_while(|(w, a)| !(w == "FROM" && a.starts_with("scratch"))) {
        if word == "WORKDIR" || word == "VOLUME" {
            assert!(script_files.contains_key(value.as_str()), "{word} {value} is not in the image");
        }
        if word == "COPY" && value.ends_with("/usr/local/bin/") {
            for source in value.split_whitespace().filter(|w| w.starts_with("/out/bin/")) {
                let name = source.rsplit('/').next().unwrap_or_default();
                assert!(script_files.contains_key(&format!("/usr/local/bin/{name}")), "{name}");
            }
        }
    }
}
