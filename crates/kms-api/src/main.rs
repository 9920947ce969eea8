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

/// Binds the admin API: loopback only unless allowed, with a token when
/// reachable from elsewhere.
async fn admin_listener(
    cli: &Cli,
    at: std::net::SocketAddr,
    state: AppState,
) -> anyhow::Result<(std::net::SocketAddr, tokio::net::TcpListener, axum::Router)> {
    if !at.ip().is_loopback() && !cli.admin_allow_remote {
        anyhow::bail!(
            "--admin-listen {at} is not a loopback address; the admin API stays on loopback unless --admin-allow-remote (with --admin-token-file)"
        );
    }
    if !at.ip().is_loopback() && cli.admin_token_file.is_none() {
        anyhow::bail!("--admin-allow-remote needs --admin-token-file");
    }
    let token = match &cli.admin_token_file {
        Some(path) => {
            let mut t = std::fs::read(path)
                .with_context(|| format!("reading the admin token file {}", path.display()))?;
            while t.last().is_some_and(u8::is_ascii_whitespace) {
                t.pop();
            }
            anyhow::ensure!(t.len() >= 16, "the admin token must be at least 16 bytes");
            Some(t)
        }
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("binding the admin API on {at}"))?;
    let addr = listener.local_addr()?;
    let router = kms_api::admin::admin_app(kms_api::admin::Admin::new(state, token));
    Ok((addr, listener, router))
}

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

    // Forget sessions a day after they expire (docs/protocol.md: a completed
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

    let admin = match cli.admin_listen {
        Some(at) => Some(admin_listener(&cli, at, state.clone()).await?),
        None => None,
    };

    let internal = match cli.internal_listen {
        Some(at) => {
            if at == cli.listen || at.ip().is_unspecified() {
                anyhow::bail!(
                    "--internal-listen {at} must be a private address of its own, never the public --listen or 0.0.0.0: it serves the secure environments alone"
                );
            }
            if !at.ip().is_loopback() {
                tracing::warn!(%at, "--internal-listen is not a loopback address: make sure only the secure environments can reach it");
            }
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --internal-listen {at}"))?;
            Some(listener)
        }
        None => None,
    };
    let bitgo = match (cli.bitgo_listen, &cli.bitgo_upstream) {
        (Some(at), Some(upstream)) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --bitgo-listen {at}"))?;
            Some((listener, upstream.clone()))
        }
        _ => None,
    };

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    if let Some((admin_addr, _, _)) = &admin {
        println!("admin listening on {admin_addr}");
    }
    if let Some(l) = &internal {
        println!("internal listening on {}", l.local_addr()?);
    }
    if let Some((l, _)) = &bitgo {
        println!("bitgo listening on {}", l.local_addr()?);
    }
    std::io::stdout().flush()?;
    if let Some(listener) = internal {
        let (router, limits) = (
            kms_api::internal::internal_app(state.clone()),
            cli.limits.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) =
                kms_serve::serve(listener, router, limits, kms_serve::shutdown_signal()).await
            {
                tracing::error!(error = %e, "internal listener stopped");
            }
        });
    }
    if let Some((listener, upstream)) = bitgo {
        tracing::info!(addr = %listener.local_addr()?, %upstream, "relaying BitGo key-provider connections to the secure environment");
        tokio::spawn(kms_api::tcp_relay::serve(
            listener,
            upstream,
            kms_serve::shutdown_signal(),
        ));
    }
    if let Some((admin_addr, listener, router)) = admin {
        let limits = cli.limits.clone();
        tokio::spawn(async move {
            tracing::info!(addr = %admin_addr, "admin API serving");
            if let Err(e) =
                kms_serve::serve(listener, router, limits, kms_serve::shutdown_signal()).await
            {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
    }
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
