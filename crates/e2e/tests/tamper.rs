//! An attacker with write access to kms-api's database: every change to a
//! stored blob, and every blob moved to another row, is refused by the
//! secure environment (500 `internal_error`, a generic message) — never
//! accepted — and single use survives a kms-api restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kms_client::{generate_key_material, KeyType};
use kms_e2e::{post_json, Deployment};
use kms_protocol::{b64, Id};
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, SqlitePool};

async fn db(d: &Deployment) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(d.db_path())
        .busy_timeout(std::time::Duration::from_secs(5));
    SqlitePool::connect_with(opts).await.unwrap()
}

async fn blob(pool: &SqlitePool, table: &str, column: &str, key: &str, id: &Id) -> Vec<u8> {
    sqlx::query(&format!("SELECT {column} FROM {table} WHERE {key} = ?"))
        .bind(&id.as_bytes()[..])
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0)
}

async fn set_blob(pool: &SqlitePool, table: &str, column: &str, key: &str, id: &Id, value: &[u8]) {
    let n = sqlx::query(&format!("UPDATE {table} SET {column} = ? WHERE {key} = ?"))
        .bind(value)
        .bind(&id.as_bytes()[..])
        .execute(pool)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
}

async fn export_status(d: &Deployment, wallet: &Id) -> (u16, String) {
    let recipient = kms_crypto::hpke::HpkeSecretKey::generate().unwrap();
    let a = post_json(
        &format!("{}/v1/wallets/{wallet}/export", d.api_url()),
        &json!({"recipient_public_key": b64::encode(recipient.public_key().as_bytes())}),
    )
    .await;
    (a.status, a.code().to_owned())
}

#[tokio::test]
async fn swapped_blobs_between_wallets_fail_to_open() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let a = kms
        .import(&generate_key_material(KeyType::Secp256k1).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let b = kms
        .import(&generate_key_material(KeyType::Secp256k1).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let pool = db(&d).await;
    for column in ["ciphertext", "wrapped_key"] {
        let va = blob(&pool, "wallets", column, "wallet_id", &a).await;
        let vb = blob(&pool, "wallets", column, "wallet_id", &b).await;
        set_blob(&pool, "wallets", column, "wallet_id", &a, &vb).await;
        set_blob(&pool, "wallets", column, "wallet_id", &b, &va).await;
        assert_eq!(
            export_status(&d, &a).await,
            (500, "internal_error".to_owned()),
            "{column}"
        );
        assert_eq!(
            export_status(&d, &b).await,
            (500, "internal_error".to_owned()),
            "{column}"
        );
        set_blob(&pool, "wallets", column, "wallet_id", &a, &va).await;
        set_blob(&pool, "wallets", column, "wallet_id", &b, &vb).await;
        assert_eq!(export_status(&d, &a).await.0, 200);
    }
    // Both blobs moved together to the other row still fail: both bind the wallet id.
    let (wa, ca) = (
        blob(&pool, "wallets", "wrapped_key", "wallet_id", &a).await,
        blob(&pool, "wallets", "ciphertext", "wallet_id", &a).await,
    );
    set_blob(&pool, "wallets", "wrapped_key", "wallet_id", &b, &wa).await;
    set_blob(&pool, "wallets", "ciphertext", "wallet_id", &b, &ca).await;
    assert_eq!(
        export_status(&d, &b).await,
        (500, "internal_error".to_owned())
    );
    // The key type is bound too.
    sqlx::query("UPDATE wallets SET key_type = 'p256' WHERE wallet_id = ?")
        .bind(&a.as_bytes()[..])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        export_status(&d, &a).await,
        (500, "internal_error".to_owned())
    );
    // The generic message does not say which check failed.
    assert!(!d.logs().is_empty());
}

#[tokio::test]
async fn every_flipped_byte_of_a_stored_wallet_is_refused() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let w = kms
        .import(&generate_key_material(KeyType::Ed25519).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let pool = db(&d).await;
    for column in ["wrapped_key", "ciphertext"] {
        let good = blob(&pool, "wallets", column, "wallet_id", &w).await;
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            set_blob(&pool, "wallets", column, "wallet_id", &w, &bad).await;
            assert_eq!(
                export_status(&d, &w).await,
                (500, "internal_error".to_owned()),
                "{column} byte {i}"
            );
        }
        // Truncated and extended.
        set_blob(
            &pool,
            "wallets",
            column,
            "wallet_id",
            &w,
            &good[..good.len() - 1],
        )
        .await;
        assert_eq!(export_status(&d, &w).await.0, 500);
        set_blob(
            &pool,
            "wallets",
            column,
            "wallet_id",
            &w,
            &[good.as_slice(), &[0]].concat(),
        )
        .await;
        assert_eq!(export_status(&d, &w).await.0, 500);
        set_blob(&pool, "wallets", column, "wallet_id", &w, &good).await;
        assert_eq!(export_status(&d, &w).await.0, 200);
    }
}

#[tokio::test]
async fn tampered_session_state_is_refused_and_stores_nothing() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let material = generate_key_material(KeyType::Raw).unwrap();
    let s = kms.start_import_session().await.unwrap();
    let pool = db(&d).await;
    let good = blob(
        &pool,
        "import_sessions",
        "sealed_state",
        "session_id",
        s.id(),
    )
    .await;
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x80;
        set_blob(
            &pool,
            "import_sessions",
            "sealed_state",
            "session_id",
            s.id(),
            &bad,
        )
        .await;
        let err = kms.complete_import(&s, &material).await.unwrap_err();
        assert!(
            matches!(err, kms_client::ClientError::Api { status: 500, .. }),
            "byte {i}: {err:?}"
        );
    }
    // Another session's sealed state in this row does not open either.
    let other = kms.start_import_session().await.unwrap();
    let theirs = blob(
        &pool,
        "import_sessions",
        "sealed_state",
        "session_id",
        other.id(),
    )
    .await;
    set_blob(
        &pool,
        "import_sessions",
        "sealed_state",
        "session_id",
        s.id(),
        &theirs,
    )
    .await;
    assert!(kms.complete_import(&s, &material).await.is_err());
    // Extending the expiry in the database breaks the binding.
    set_blob(
        &pool,
        "import_sessions",
        "sealed_state",
        "session_id",
        s.id(),
        &good,
    )
    .await;
    sqlx::query("UPDATE import_sessions SET expires_at = expires_at + 3600 WHERE session_id = ?")
        .bind(&s.id().as_bytes()[..])
        .execute(&pool)
        .await
        .unwrap();
    assert!(kms.complete_import(&s, &material).await.is_err());
    assert_eq!(kms.list_wallets(None, 10).await.unwrap().wallets.len(), 0);
    let completed: Option<i64> =
        sqlx::query_scalar("SELECT completed_at FROM import_sessions WHERE session_id = ?")
            .bind(&s.id().as_bytes()[..])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        completed, None,
        "a refused import must not use up the session"
    );
}

#[tokio::test]
async fn a_completed_session_cannot_complete_again_after_restarts() {
    let mut d = Deployment::start(&[]);
    let kms = d.client();
    let material = generate_key_material(KeyType::Secp256k1).unwrap();
    let s = kms.start_import_session().await.unwrap();
    kms.complete_import(&s, &material).await.unwrap();
    d.stop_api();
    d.start_api();
    let kms = d.client();
    let err = kms.complete_import(&s, &material).await.unwrap_err();
    assert!(
        matches!(err, kms_client::ClientError::Api { status: 409, .. }),
        "{err:?}"
    );
    // And with the secure environment restarted too (its memory is gone; the store remembers).
    d.stop_se();
    d.start_se();
    d.stop_api();
    d.start_api();
    let kms = d.client();
    for _ in 0..100 {
        if kms.health().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let err = kms.complete_import(&s, &material).await.unwrap_err();
    assert!(
        matches!(err, kms_client::ClientError::Api { status: 409, .. }),
        "{err:?}"
    );
    assert_eq!(kms.list_wallets(None, 10).await.unwrap().wallets.len(), 1);
}
