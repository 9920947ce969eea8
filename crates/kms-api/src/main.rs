//! `kms-api`: the untrusted public API.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kms_api::config::Cli;
use kms_api::relay::SecureEnvClient;
use kms_api::{app, system_clock, AppState, COMPLETED_SESSION_RETENTION};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kms-api: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("kms-api: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let database_url = match &cli.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cli.data_dir)
                .with_context(|| format!("creating data dir {}", cli.data_dir.display()))?;
            format!("sqlite://{}", cli.data_dir.join("kms.sqlite").display())
        }
    };
    let store = kms_store::open(&database_url)
        .await
        .with_context(|| format!("opening the store {database_url}"))?;
    let env = SecureEnvClient::new(&cli.secure_env_url).map_err(anyhow::Error::msg)?;
    let state = AppState {
        store: store.clone(),
        env,
        clock: system_clock(),
    };

    // Forget sessions a day after they expire (PROTOCOL.md: a completed
    // session stays 409 for at least 24 hours after it expires).
    let purge = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let cutoff = purge.now().saturating_sub(COMPLETED_SESSION_RETENTION);
            match purge.store.purge_sessions(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "forgot expired import sessions"),
                Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
            }
        }
    });

    // Copy audit records this store missed (a crash between the secure
    // environment writing one and this process storing it).
    let sync = state.clone();
    let every = cli.audit_sync_interval;
    tokio::spawn(async move {
        let watermark = std::sync::atomic::AtomicU64::new(0);
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        loop {
            tick.tick().await;
            match kms_api::routes::sync_audit(&sync, &watermark).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    copied = n,
                    "copied missed audit records from the secure environment"
                ),
                Err(e) => tracing::debug!(error = %e, "audit sync skipped"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, secure_env = %cli.secure_env_url, "kms-api serving");
    kms_serve::serve(
        listener,
        app(state),
        cli.limits.clone(),
        kms_serve::shutdown_signal(),
    )
    .await?;
    tracing::info!("kms-api stopped");
    Ok(())
}
