//! `secure-environment`: serve the internal API, or print the identity key.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kms_protocol::audit::{AuditEntry, AuditEvent};
use kms_protocol::b64;
use secure_environment::config::{Cli, Command};
use secure_environment::server;
use secure_runtime::audit::{AuditLog, AUDIT_FILE};
use secure_runtime::runtime::system_clock;
use secure_runtime::{hardening, keystore, SecureRuntime};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(e) = hardening::disable_core_dumps() {
        tracing::warn!(error = %e, "could not disable core dumps");
    }
    let result = match cli.command {
        Some(Command::Identity) => print_identity(&cli),
        Some(Command::Reseal(ref to)) => reseal(&cli, to),
        Some(Command::BitgoCsr(ref args)) => print_bitgo_csr(&cli, args),
        None => serve(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("secure-environment: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<keystore::Loaded> {
    let spec = cli.root.spec(&cli.data_dir)?;
    let loaded = keystore::load_or_create(&cli.data_dir, &spec)?;
    if loaded.created {
        tracing::info!(data_dir = %cli.data_dir.display(), provider = loaded.file.provider(), "created a new key set");
    }
    warn_if_dev_root_key(&loaded);
    Ok(loaded)
}

fn warn_if_dev_root_key(loaded: &keystore::Loaded) {
    if loaded.root_key_in_data_dir {
        tracing::warn!(
            "the root key file sits beside the key set it seals: this protects nothing against whoever \
             holds the data dir. Development only; move it with --root-key-file (SECURE_ENV_ROOT_KEY_FILE), \
             or use a passphrase, a PKCS#11 token or AWS KMS (--root-key)"
        );
    }
}

/// `secure-environment reseal`: the key set under a new root key, with an
/// audit record of the move.
fn reseal(cli: &Cli, to: &secure_environment::config::ResealArgs) -> anyhow::Result<()> {
    let from = cli.root.spec(&cli.data_dir)?;
    let to_spec = to.spec(&cli.root, &cli.data_dir)?;
    let audit_path = cli.data_dir.join(AUDIT_FILE);
    // The audit log is locked by a running server: taking it first makes a
    // re-seal under a running server fail before anything is written.
    let (loaded, audit) = keystore::reseal(&cli.data_dir, &from, &to_spec, |keys| {
        AuditLog::open(&audit_path, keys.identity().public_key(), false).map_err(|e| {
            format!("opening the audit log (stop the secure environment before re-sealing): {e}")
        })
    })?;
    let provider = loaded.file.provider();
    warn_if_dev_root_key(&loaded);
    let identity = *loaded.keys.identity().public_key();
    let lock = loaded.lock;
    let runtime = SecureRuntime::new(
        loaded.keys,
        audit,
        cli.session_ttl,
        String::new(),
        system_clock(),
    );
    runtime
        .trusted_env_exec(|env| env.record(AuditEntry::new(AuditEvent::KeysetResealed, "ok")))
        .context("writing the audit record of the re-seal")?;
    drop(lock);
    println!(
        "re-sealed the key set under the {provider} root-key provider; identity {}",
        b64::encode(identity.as_bytes())
    );
    Ok(())
}

/// The runtime over a loaded key set and its audit log; records the key
/// set's creation, or (when `opened`) that it was opened.
fn runtime(
    cli: &Cli,
    loaded: keystore::Loaded,
    measurement: String,
    opened: bool,
) -> anyhow::Result<SecureRuntime> {
    let identity = *loaded.keys.identity().public_key();
    let audit = AuditLog::open(&cli.data_dir.join(AUDIT_FILE), &identity, loaded.created)?;
    let created = loaded.created;
    let lock = loaded.lock;
    let runtime = SecureRuntime::with_file(
        loaded.keys,
        Some(loaded.file),
        audit,
        cli.session_ttl,
        measurement,
        system_clock(),
    )
    .with_hd_node_cache(cli.hd_node_cache_entries);
    let event = match (created, opened) {
        (true, _) => Some(AuditEvent::KeysetCreated),
        (false, true) => Some(AuditEvent::KeysetOpened),
        (false, false) => None,
    };
    if let Some(event) = event {
        runtime
            .trusted_env_exec(|env| env.record(AuditEntry::new(event, "ok")))
            .context("writing the audit record of the key set")?;
    }
    drop(lock);
    Ok(runtime)
}

/// `secure-environment bitgo-csr`: the CSR of the key set's TLS key.
fn print_bitgo_csr(
    cli: &Cli,
    args: &secure_environment::config::BitgoCsrArgs,
) -> anyhow::Result<()> {
    let loaded = load(cli)?;
    let csr =
        secure_environment::bitgo::csr(&loaded.keys, &args.names).map_err(anyhow::Error::msg)?;
    if loaded.created {
        runtime(cli, loaded, String::new(), false)?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(csr.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn print_identity(cli: &Cli) -> anyhow::Result<()> {
    let loaded = load(cli)?;
    if loaded.created {
        // Only a new key set needs its creation recorded; otherwise the audit
        // log (which a running server holds locked) is left alone.
        runtime(cli, loaded, String::new(), false)?;
        return print_identity(cli);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        b64::encode(loaded.keys.identity().public_key().as_bytes())
    )?;
    out.flush()?;
    Ok(())
}

/// Lowercase hex SHA-256 of this executable (docs/protocol.md §1 `measurement`).
fn measurement() -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating own executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    Ok(kms_crypto::hex(&kms_crypto::sha256(&bytes)))
}

/// The key provider's TLS listener (docs/bitgo.md), bound, and the task
/// that serves it until shutdown.
async fn bitgo_listener(
    args: &secure_environment::config::BitgoArgs,
    at: std::net::SocketAddr,
    runtime: SecureRuntime,
) -> anyhow::Result<(
    std::net::SocketAddr,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let cert = args.bitgo_tls_cert.as_deref().context(
        "--bitgo-listen needs --bitgo-tls-cert (the certificate the wallet manager's CA signed)",
    )?;
    let key = match args.bitgo_tls_key.as_deref() {
        Some(path) => {
            tracing::warn!(path = %path.display(), "the key provider's TLS key is read from a file: development only; without --bitgo-tls-key the key set's own key is used (secure-environment bitgo-csr)");
            secure_environment::bitgo::key_from_file(path)
        }
        None => runtime
            .trusted_env_exec(|env| env.provider_tls_key())
            .map(|der| rustls_pki_types::PrivateKeyDer::Pkcs8(der.expose().to_vec().into()))
            .map_err(|e| format!("the key set's TLS key: {e}")),
    }
    .map_err(anyhow::Error::msg)?;
    if args.bitgo_insecure_no_client_auth {
        tracing::warn!(
            "--bitgo-insecure-no-client-auth: the key provider accepts connections WITHOUT a client \
             certificate; anyone who can reach kms-api's --bitgo-listen can fetch every stored key. \
             Development only"
        );
    }
    let tls = secure_environment::bitgo::tls_config(
        cert,
        key,
        args.bitgo_client_ca.as_deref(),
        args.bitgo_insecure_no_client_auth,
    )
    .map_err(anyhow::Error::msg)?;
    let url = args.kms_api_url.as_deref().context(
        "--bitgo-listen needs --kms-api-url: kms-api's --internal-listen address, where the sealed keys are kept",
    )?;
    let store =
        secure_environment::bitgo::store::StoreClient::new(url).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("binding --bitgo-listen {at}"))?;
    let addr = listener.local_addr()?;
    let app = secure_environment::bitgo::app(runtime, store);
    Ok((
        addr,
        secure_environment::bitgo::serve(listener, tls, app, kms_serve::shutdown_signal()),
    ))
}

fn serve(cli: Cli) -> anyhow::Result<()> {
    let loaded = load(&cli)?;
    let measurement = measurement()?;
    tracing::info!(
        identity_public_key = %b64::encode(loaded.keys.identity().public_key().as_bytes()),
        measurement = %measurement,
        core_dumps_disabled = hardening::core_dumps_disabled(),
        "key set open"
    );
    let runtime = runtime(&cli, loaded, measurement, true)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = kms_serve::Listener::bind(&cli.listen)
            .await
            .with_context(|| format!("binding {}", cli.listen))?;
        let addr = listener.local_addr()?;
        if matches!(addr, kms_serve::ListenAddr::Tcp(a) if !a.ip().is_loopback()) {
            tracing::warn!(%addr, "listening on a non-loopback address: only kms-api should reach the secure environment");
        }
        let provider = match &cli.bitgo.bitgo_listen {
            Some(at) => Some(bitgo_listener(&cli.bitgo, *at, runtime.clone()).await?),
            None => None,
        };
        println!("listening on {addr}");
        if let Some((bitgo_addr, _)) = &provider {
            println!("bitgo listening on {bitgo_addr}");
        }
        std::io::stdout().flush()?;
        tracing::info!(%addr, "secure environment serving");
        if let Some((bitgo_addr, serving)) = provider {
            tracing::info!(addr = %bitgo_addr, "key provider for BitGo Advanced Wallets serving (TLS ends here)");
            tokio::spawn(serving);
        }
        kms_serve::serve(listener, server::app(runtime), cli.limits.clone(), kms_serve::shutdown_signal()).await?;
        if let kms_serve::ListenAddr::Unix(path) = &addr {
            // The next start would replace it anyway; a stopped server
            // leaves nothing that looks like it still listens.
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("secure environment stopped");
        Ok(())
    })
}
