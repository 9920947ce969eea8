//! `--bitgo-listen`: BitGo's wallet manager connects here and every byte
//! is copied to and from the secure environment's key-provider listener
//! (`--bitgo-upstream`), where its TLS session ends (docs/bitgo.md). This
//! process sees only TLS records: no certificate, key or plaintext of the
//! session.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Connections relayed at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 1024;
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Relays every connection on `listener` to `upstream` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    upstream: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let upstream: Arc<str> = upstream.into();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (mut inbound, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "bitgo relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "bitgo relay: too many connections, closing one");
            continue;
        };
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&*upstream));
            let mut outbound = match connect.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "bitgo relay: the secure environment's listener is unreachable");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "bitgo relay: connecting to the secure environment timed out");
                    return;
                }
            };
            let _ = outbound.set_nodelay(true);
            if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await {
                tracing::debug!(%peer, error = %e, "bitgo relay: connection ended");
            }
            drop(slot);
        });
    }
}
