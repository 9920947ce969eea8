#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Paths of the binaries, built once per test process.
#[derive(Debug)]
pub struct Binaries {
    pub secure_environment: PathBuf,
    pub kms_api: PathBuf,
    pub client_example: PathBuf,
    pub kms_audit: PathBuf,
    pub kms_admin: PathBuf,
    pub kms_wallet: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds the binaries (a no-op when they are fresh) and returns their paths.
pub fn binaries() -> &'static Binaries {
    static BINS: OnceLock<Binaries> = OnceLock::new();
    BINS.get_or_init(|| {
        let root = workspace_root();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // The secure environment gets the root-key providers this test
        // build was given (`--all-features` gives both), so a plain
        // `cargo test` stays lean.
        let mut features = Vec::new();
        if cfg!(feature = "pkcs11") {
            features.push("secure-environment/pkcs11");
        }
        if cfg!(feature = "aws-kms") {
            features.push("secure-environment/aws-kms");
        }
        let mut args = vec![
            "build",
            "--bin",
            "secure-environment",
            "--bin",
            "kms-api",
            "--bin",
            "client-example",
            "--bin",
            "kms-audit",
            "--bin",
            "kms-admin",
            "--bin",
            "kms-wallet",
        ];
        let features = features.join(",");
        if !features.is_empty() {
            args.extend(["--features", &features]);
        }
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(&args)
            .status()
            .expect("cargo build runs");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let dir = target.join("debug");
        Binaries {
            secure_environment: dir.join("secure-environment"),
            kms_api: dir.join("kms-api"),
            client_example: dir.join("client-example"),
            kms_audit: dir.join("kms-audit"),
            kms_admin: dir.join("kms-admin"),
            kms_wallet: dir.join("kms-wallet"),
        }
    })
}

/// The key set in a secure environment's data dir, opened with the
/// default local root key file (for tests that look inside it).
pub fn open_key_set(data_dir: &Path) -> kms_crypto::keyset::KeySet {
    let spec = secure_runtime::root::RootKeySpec::Local(secure_runtime::root::LocalSettings {
        key_file: data_dir.join(secure_runtime::keystore::ROOT_KEY_FILE),
        passphrase_file: None,
        passphrase_env: "KMS_E2E_UNSET_PASSPHRASE",
        argon2: kms_crypto::kdf::Argon2Params::DEFAULT,
    });
    secure_runtime::keystore::load_or_create(data_dir, &spec)
        .expect("the key set opens")
        .keys
}

/// A running server process; killed on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: String,
    pub log: PathBuf,
    /// Lines the server printed after its first.
    more: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `bin` with `args`, stderr to `log`, and waits for its
    /// `listening on ADDR` line.
    pub fn start(bin: &Path, args: &[String], log: &Path) -> Server {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        let _ = tx.send(l);
                    }
                    Err(_) => break,
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not start; log:\n{}",
                    bin.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            });
        let addr = first
            .strip_prefix("listening on ")
            .expect("first line is `listening on ADDR`")
            .to_owned();
        Server {
            child,
            addr,
            log: log.to_path_buf(),
            more: std::sync::Mutex::new(rx),
        }
    }

    /// Waits for a later stdout line starting with `prefix` and returns
    /// the rest of it (e.g. kms-api's `admin listening on ADDR`).
    pub fn line_after(&self, prefix: &str) -> String {
        let rx = self.more.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no line starting {prefix:?} on stdout"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both servers with their data dirs, on free ports.
#[derive(Debug)]
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub se: Option<Server>,
    pub api: Option<Server>,
    se_args: Vec<String>,
    api_args: Vec<String>,
    se_addr: Option<String>,
    admin_addr: std::sync::Mutex<Option<String>>,
}

impl Deployment {
    pub fn se_data(&self) -> PathBuf {
        self.dir.path().join("se")
    }

    pub fn api_data(&self) -> PathBuf {
        self.dir.path().join("api")
    }

    pub fn db_path(&self) -> PathBuf {
        self.api_data().join("kms.sqlite")
    }

    /// Starts both servers; `se_args` are extra secure-environment flags.
    pub fn start(se_args: &[&str]) -> Deployment {
        Self::start_with(se_args, &[])
    }

    /// Starts both servers with extra flags for each.
    pub fn start_with(se_args: &[&str], api_args: &[&str]) -> Deployment {
        let mut d = Self::unstarted(tempfile::tempdir().unwrap(), se_args, api_args, None);
        d.start_se();
        d.start_api();
        d
    }

    /// Starts both servers with the internal hop over a Unix socket
    /// (`se.sock` in the deployment's directory).
    pub fn start_over_unix_socket() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("unix:{}", dir.path().join("se.sock").display());
        let mut d = Self::unstarted(dir, &[], &[], Some(socket));
        d.start_se();
        d.start_api();
        d
    }

    fn unstarted(
        dir: tempfile::TempDir,
        se_args: &[&str],
        api_args: &[&str],
        se_addr: Option<String>,
    ) -> Deployment {
        Deployment {
            dir,
            se: None,
            api: None,
            se_args: se_args.iter().map(|s| (*s).to_owned()).collect(),
            api_args: api_args.iter().map(|s| (*s).to_owned()).collect(),
            se_addr,
            admin_addr: std::sync::Mutex::new(None),
        }
    }

    /// The secure environment's Unix socket, if it listens on one.
    pub fn se_socket(&self) -> Option<PathBuf> {
        self.se_addr
            .as_deref()
            .and_then(|a| a.strip_prefix("unix:"))
            .map(PathBuf::from)
    }

    /// (Re)starts the secure environment, on its previous address if it had one.
    pub fn start_se(&mut self) {
        let listen = self
            .se_addr
            .clone()
            .unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let mut args = vec![
            "--listen".to_owned(),
            listen,
            "--data-dir".to_owned(),
            self.se_data().display().to_string(),
        ];
        args.extend(self.se_args.iter().cloned());
        let log = self.dir.path().join("secure-environment.log");
        let bin = &binaries().secure_environment;
        // The old port may linger briefly after a kill; retry the bind.
        let deadline = Instant::now() + Duration::from_secs(10);
        let server = loop {
            match std::panic::catch_unwind(|| Server::start(bin, &args, &log)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => std::panic::resume_unwind(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        self.se_addr = Some(server.addr.clone());
        self.se = Some(server);
    }

    /// (Re)starts kms-api on a new free port.
    pub fn start_api(&mut self) {
        let se_addr = self
            .se_addr
            .as_ref()
            .expect("secure environment started first");
        let se_url = if se_addr.starts_with("unix:") {
            se_addr.clone()
        } else {
            format!("http://{se_addr}")
        };
        let args = vec![
            "--listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--secure-env-url".to_owned(),
            se_url,
            "--data-dir".to_owned(),
            self.api_data().display().to_string(),
            "--audit-sync-interval".to_owned(),
            "1".to_owned(),
        ];
        let mut args = args;
        args.extend(self.api_args.iter().cloned());
        let log = self.dir.path().join("kms-api.log");
        *self.admin_addr.lock().unwrap() = None;
        self.api = Some(Server::start(&binaries().kms_api, &args, &log));
    }

    /// Replaces the secure environment's extra flags for its next start.
    pub fn set_se_args(&mut self, se_args: &[&str]) {
        self.se_args = se_args.iter().map(|s| (*s).to_owned()).collect();
    }

    pub fn stop_se(&mut self) {
        if let Some(s) = self.se.take() {
            s.kill();
        }
    }

    pub fn stop_api(&mut self) {
        if let Some(s) = self.api.take() {
            s.kill();
        }
    }

    pub fn api_url(&self) -> String {
        self.api.as_ref().expect("kms-api running").url()
    }

    /// The admin API's URL (start kms-api with `--admin-listen 127.0.0.1:0`).
    pub fn admin_url(&self) -> String {
        let api = self.api.as_ref().expect("kms-api running");
        let mut cached = self.admin_addr.lock().unwrap();
        if cached.is_none() {
            *cached = Some(api.line_after("admin listening on "));
        }
        format!("http://{}", cached.as_ref().unwrap())
    }

    /// The identity key as the secure environment wrote it for pinning.
    pub fn identity_text(&self) -> String {
        std::fs::read_to_string(self.se_data().join("identity.pub")).unwrap()
    }

    /// An SDK client pinned to this deployment's identity key.
    pub fn client(&self) -> kms_client::KmsClient {
        let identity = kms_client::parse_identity_public_key(&self.identity_text()).unwrap();
        kms_client::KmsClient::new(&self.api_url(), identity).unwrap()
    }

    /// Everything both servers logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for f in ["secure-environment.log", "kms-api.log"] {
            all.push_str(&std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default());
        }
        all
    }

    /// Asserts that no secret appears in either server's log, as base64,
    /// hex or Rust's debug form of its bytes.
    pub fn assert_logs_hold_none_of(&self, secrets: &[Vec<u8>]) {
        let logs = self.logs();
        for secret in secrets {
            for form in [
                kms_protocol::b64::encode(secret),
                kms_crypto::hex(secret),
                format!("{secret:?}"),
            ] {
                assert!(!logs.contains(&form), "a secret reached the logs");
            }
        }
    }

    /// The whole audit chain from kms-api once it is contiguous from seq 1
    /// to at least `min_last` (records kms-api did not relay itself, such
    /// as key-set changes, are copied in the background).
    pub async fn audit_chain(&self, min_last: u64) -> Vec<kms_protocol::audit::AuditRecord> {
        for _ in 0..100 {
            let records = kms_cli::fetch_all(&self.api_url()).await.unwrap();
            let contiguous = records
                .iter()
                .enumerate()
                .all(|(i, r)| r.seq == i as u64 + 1);
            if contiguous && records.last().is_some_and(|r| r.seq >= min_last) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the audit chain did not become complete");
    }

    /// `kms-audit verify` against this deployment's identity on an export
    /// (JSON lines, see [`jsonl`]): whether it passed, and what it printed.
    pub fn verify_audit_export(&self, export: &str) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, export).unwrap();
        let out = Command::new(&binaries().kms_audit)
            .args(["verify", "--identity-file"])
            .arg(self.se_data().join("identity.pub"))
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// Audit records as the JSON lines kms-audit reads.
pub fn jsonl(records: &[kms_protocol::audit::AuditRecord]) -> String {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect()
}

/// A raw HTTP answer: status, headers and JSON body (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: serde_json::Value,
}

impl Answer {
    /// The error code of docs/protocol.md's error JSON.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// Asserts status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        assert!(self.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
}

/// Sends a raw request (any method, any body bytes).
pub async fn raw(method: &str, url: &str, body: Option<Vec<u8>>) -> Answer {
    let client = reqwest::Client::new();
    let mut req = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

/// POSTs a JSON value.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Answer {
    raw("POST", url, Some(serde_json::to_vec(body).unwrap())).await
}
