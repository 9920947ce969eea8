//! Owner-bound wallets (docs/protocol.md §6) with the real binaries: the secure
//! environment exports them only with the owner's signature over this
//! wallet, this recipient and an expiry at most 300 s ahead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use kms_client::{
    authorize_export, generate_key_material, ClientError, HpkeSecretKey, KeyType, SigningKey,
};
use kms_e2e::{post_json, Deployment};
use kms_protocol::api::Authorization;
use kms_protocol::{b64, ErrorCode, Id, Signature};
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn code(e: &ClientError) -> (u16, ErrorCode) {
    match e {
        ClientError::Api { status, code, .. } => (*status, *code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn owned_wallet(d: &Deployment, owner: &SigningKey) -> (Id, kms_client::KeyMaterial) {
    let material = generate_key_material(KeyType::Secp256k1)
        .unwrap()
        .with_owner(*owner.public_key())
        .unwrap();
    let receipt = d.client().import(&material).await.unwrap();
    assert_eq!(receipt.owner_public_key.as_ref(), Some(owner.public_key()));
    (receipt.wallet_id, material)
}

#[tokio::test]
async fn owner_bound_export_needs_the_owners_signature() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let owner = SigningKey::generate().unwrap();
    let (wallet, material) = owned_wallet(&d, &owner).await;
    assert_eq!(
        kms.wallet(&wallet).await.unwrap().owner_public_key.as_ref(),
        Some(owner.public_key())
    );

    let recipient = HpkeSecretKey::generate().unwrap();
    let rpk = *recipient.public_key();
    let export = |auth: Option<Authorization>| {
        let kms = kms.clone();
        let recipient = HpkeSecretKey::from_scalar(
            kms_client::SecretKey::from_slice(recipient.scalar().expose()).unwrap(),
        )
        .unwrap();
        async move { kms.export_authorized(&wallet, &recipient, auth).await }
    };

    // No authorization: 401.
    assert_eq!(
        code(&export(None).await.unwrap_err()),
        (401, ErrorCode::AuthorizationRequired)
    );
    // Signed by someone else, expired, expiring now, too far ahead: 403.
    let stranger = SigningKey::generate().unwrap();
    for auth in [
        authorize_export(&stranger, &wallet, &rpk, now() + 60).unwrap(),
        authorize_export(&owner, &wallet, &rpk, now() - 1).unwrap(),
        authorize_export(&owner, &wallet, &rpk, now()).unwrap(),
        authorize_export(&owner, &wallet, &rpk, now() + 400).unwrap(),
        authorize_export(&owner, &wallet, &rpk, u64::MAX).unwrap(),
    ] {
        assert_eq!(
            code(&export(Some(auth)).await.unwrap_err()),
            (403, ErrorCode::AuthorizationFailed)
        );
    }
    // For another recipient or another wallet: 403.
    let other_recipient = HpkeSecretKey::generate().unwrap();
    let for_other =
        authorize_export(&owner, &wallet, other_recipient.public_key(), now() + 60).unwrap();
    assert_eq!(
        code(&export(Some(for_other.clone())).await.unwrap_err()),
        (403, ErrorCode::AuthorizationFailed)
    );
    let (other_wallet, _) = owned_wallet(&d, &owner).await;
    let for_other_wallet = authorize_export(&owner, &other_wallet, &rpk, now() + 60).unwrap();
    assert_eq!(
        code(&export(Some(for_other_wallet)).await.unwrap_err()),
        (403, ErrorCode::AuthorizationFailed)
    );
    // r or s out of range, and a tampered nonce: 403.
    let good = authorize_export(&owner, &wallet, &rpk, now() + 60).unwrap();
    let n: [u8; 32] = b64::decode("_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE")
        .unwrap()
        .try_into()
        .unwrap();
    for sig in [
        [0u8; 64],
        [0xff; 64],
        [&n[..], &n[..]].concat().try_into().unwrap(),
    ] {
        let mut bad = good.clone();
        bad.signature = Signature::from_array(sig);
        assert_eq!(
            code(&export(Some(bad)).await.unwrap_err()),
            (403, ErrorCode::AuthorizationFailed)
        );
    }
    let mut bad = good.clone();
    bad.nonce = kms_protocol::Nonce::from_bytes(&[7u8; 32]).unwrap();
    assert_eq!(
        code(&export(Some(bad)).await.unwrap_err()),
        (403, ErrorCode::AuthorizationFailed)
    );

    // The owner's authorization works, also replayed to the same recipient
    // until it expires (only that recipient can open the result).
    for _ in 0..2 {
        let back = export(Some(good.clone())).await.unwrap();
        assert!(back.private_key().ct_eq(material.private_key()));
        assert!(
            back.owner_public_key().is_none(),
            "the export plaintext never carries the owner key"
        );
    }
    // 300 s ahead is the limit, inclusive.
    let edge = authorize_export(&owner, &wallet, &rpk, now() + 299).unwrap();
    assert!(export(Some(edge)).await.is_ok());
}

#[tokio::test]
async fn authorization_shape_is_checked_before_the_wallet_is_looked_up() {
    let d = Deployment::start(&[]);
    let owner = SigningKey::generate().unwrap();
    let (wallet, _) = owned_wallet(&d, &owner).await;
    let recipient = b64::encode(HpkeSecretKey::generate().unwrap().public_key().as_bytes());
    let url = format!("{}/v1/wallets/{wallet}/export", d.api_url());
    // A signature of the wrong length is 400, not 403.
    post_json(&url, &json!({"recipient_public_key": recipient, "authorization": {
        "expires_at": now() + 60, "nonce": b64::encode([1u8; 16]), "signature": b64::encode([1u8; 65])}}))
    .await
    .assert_error(400, "invalid_request");
    // `authorization: null` counts as absent: 401.
    post_json(
        &url,
        &json!({"recipient_public_key": recipient, "authorization": null}),
    )
    .await
    .assert_error(401, "authorization_required");
    // An off-curve recipient is 400 before the owner check.
    let mut off = *HpkeSecretKey::generate().unwrap().public_key().as_bytes();
    off[64] ^= 1;
    post_json(&url, &json!({"recipient_public_key": b64::encode(off)}))
        .await
        .assert_error(400, "invalid_request");
}
