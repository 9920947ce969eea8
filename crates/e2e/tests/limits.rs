//! Admission control with the real kms-api: slow clients are cut off, and
//! one client cannot take all connections or all request slots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kms_e2e::{raw, Deployment};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection or `limit` passes; returns
/// what arrived and whether it closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(limit, s.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

fn addr(d: &Deployment) -> String {
    d.api_url().trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let d = Deployment::start_with(&[], &["--header-read-timeout", "1"]);
    let mut s = TcpStream::connect(addr(&d)).await.unwrap();
    s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(closed, "the server kept a half-sent request open");
    // Normal clients are unaffected.
    assert_eq!(
        raw("GET", &format!("{}/v1/health", d.api_url()), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn one_client_cannot_hold_every_connection() {
    let d = Deployment::start_with(&[], &["--max-connections-per-client", "3"]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&d)).await.unwrap();
        // Keep-alive connections that have served one request stay open.
        s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut extra = TcpStream::connect(addr(&d)).await.unwrap();
    let _ = extra
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(
        closed && got.is_empty(),
        "a fourth connection was served: {got:?}"
    );
    // Giving one back frees a slot.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        raw("GET", &format!("{}/v1/health", d.api_url()), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn one_client_cannot_take_every_request_slot() {
    let d = Deployment::start_with(&[], &["--max-in-flight-per-client", "2"]);
    // Two requests that never finish sending their bodies hold two slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr(&d)).await.unwrap();
        s.write_all(
            b"POST /v1/import-sessions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = raw("GET", &format!("{}/v1/health", d.api_url()), None).await;
    a.assert_error(503, "unavailable");
    assert_eq!(a.retry_after.as_deref(), Some("1"));
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        raw("GET", &format!("{}/v1/health", d.api_url()), None)
            .await
            .status,
        200
    );
}
