//! A compromised kms-api: full access to its database, and the secure
//! environment's internal API called directly. Whatever it sends, it never
//! obtains the plaintext of an owner-bound wallet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kms_client::{authorize_export, generate_key_material, HpkeSecretKey, KeyType, SigningKey};
use kms_crypto::{hpke, labels};
use kms_e2e::Deployment;
use kms_protocol::api::{Authorization, ExportBundle, ImportEnvelope};
use kms_protocol::internal::{
    Export, Exported, Import, WalletRecord, PATH_EXPORT, PATH_IMPORT, PATH_SESSIONS,
};
use kms_protocol::{HpkeCiphertext, Id, P256PublicKey};
use kms_store::Store;
use serde_json::{json, Value};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The attacker's view: the secure environment's URL and kms-api's store.
struct Attacker {
    se: String,
    store: std::sync::Arc<dyn Store>,
    http: reqwest::Client,
    /// The attacker's own recipient key: it can open only what is sealed to it.
    key: HpkeSecretKey,
}

impl Attacker {
    async fn new(d: &Deployment) -> Self {
        Self {
            se: d.se.as_ref().unwrap().url(),
            store: kms_store::open(&format!("sqlite://{}", d.db_path().display()))
                .await
                .unwrap(),
            http: reqwest::Client::new(),
            key: HpkeSecretKey::generate().unwrap(),
        }
    }

    async fn record(&self, id: &Id) -> WalletRecord {
        self.store.wallet(id).await.unwrap().unwrap()
    }

    async fn call(&self, path: &str, body: &impl serde::Serialize) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.se))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Asks the secure environment for an export; returns the bundle if it gave one.
    async fn export(
        &self,
        record: WalletRecord,
        to: P256PublicKey,
        auth: Option<Authorization>,
    ) -> (u16, Option<ExportBundle>) {
        let body = Export {
            record,
            recipient_public_key: to,
            authorization: auth,
        };
        let (status, v) = self.call(PATH_EXPORT, &body).await;
        let bundle = serde_json::from_value::<Exported>(v).ok().map(|e| e.bundle);
        (status, bundle)
    }

    /// Whether the attacker can open a bundle: the only way to the plaintext.
    fn opens(&self, b: &ExportBundle) -> bool {
        self.key
            .open(&hpke::info(labels::EXPORT, &b.wallet_id), &b.encrypted_key)
            .is_ok()
    }
}

#[tokio::test]
async fn a_compromised_kms_api_cannot_export_an_owner_bound_wallet() {
    let mut d = Deployment::start(&[]);
    let kms = d.client();
    let owner = SigningKey::generate().unwrap();

    // The victim imports an owner-bound wallet, through a session whose
    // traffic the attacker records, and exports it once to its own key.
    let material = generate_key_material(KeyType::Secp256k1)
        .unwrap()
        .with_owner(*owner.public_key())
        .unwrap();
    let session = kms.start_import_session().await.unwrap();
    let sealed_state = kms_store_session_state(&d, session.id()).await;
    let victim_ct = hpke::seal(
        session.public_key(),
        &hpke::info(labels::IMPORT, session.id()),
        material.to_import_plaintext().expose(),
    )
    .unwrap();
    let receipt = post_complete(&d, session.id(), &victim_ct).await;
    let w: Id = serde_json::from_value(receipt["wallet_id"].clone()).unwrap();
    let victim_key = HpkeSecretKey::generate().unwrap();
    let seen_auth = authorize_export(&owner, &w, victim_key.public_key(), now() + 120).unwrap();
    kms.export_authorized(&w, &victim_key, Some(seen_auth.clone()))
        .await
        .unwrap();

    let mut a = Attacker::new(&d).await;
    let mine = *a.key.public_key();
    let rec = a.record(&w).await;

    // 1. No authorization.
    assert_eq!(a.export(rec.clone(), mine, None).await, (401, None));
    // 2. The captured authorization, to the attacker's key.
    assert_eq!(
        a.export(rec.clone(), mine, Some(seen_auth.clone())).await,
        (403, None)
    );
    // 3. Replayed as captured: granted, but sealed to the victim, not the attacker.
    let (status, bundle) = a
        .export(
            rec.clone(),
            *victim_key.public_key(),
            Some(seen_auth.clone()),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!a.opens(&bundle.unwrap()));
    // 4. Edited authorizations: later expiry, other nonce.
    let mut later = seen_auth.clone();
    later.expires_at += 60;
    assert_eq!(
        a.export(rec.clone(), *victim_key.public_key(), Some(later))
            .await
            .0,
        403
    );
    // 5. Swapped owner key: the metadata says the attacker owns it, and the
    //    attacker signs — the secure environment checks the owner key sealed
    //    in the record, not the one it is told.
    let thief = SigningKey::generate().unwrap();
    let mut relabeled = rec.clone();
    relabeled.owner_public_key = Some(*thief.public_key());
    let forged = authorize_export(&thief, &w, &mine, now() + 60).unwrap();
    assert_eq!(a.export(relabeled, mine, Some(forged.clone())).await.0, 403);
    assert_eq!(a.export(rec.clone(), mine, Some(forged)).await.0, 403);
    // 6. Swapped records: the attacker's own (ownerless) wallet's blobs under
    //    the victim's id, and the victim's blobs under the attacker's id.
    let own = kms
        .import(&generate_key_material(KeyType::Secp256k1).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let own_rec = a.record(&own).await;
    for (wrapped, ct, id) in [
        (&own_rec.wrapped_key, &own_rec.ciphertext, w),
        (&rec.wrapped_key, &rec.ciphertext, own),
        (&rec.wrapped_key, &own_rec.ciphertext, own),
        (&own_rec.wrapped_key, &rec.ciphertext, own),
        (&own_rec.wrapped_key, &rec.ciphertext, w),
    ] {
        let mut r = rec.clone();
        r.wallet_id = id;
        r.owner_public_key = None;
        r.wrapped_key = wrapped.clone();
        r.ciphertext = ct.clone();
        let (status, bundle) = a.export(r, mine, None).await;
        assert!(
            bundle.is_none() && status == 500,
            "swapped blobs gave {status}"
        );
    }
    // 7. Replayed sealed session state and ciphertext: refused by the same
    //    instance; after a restart it re-imports — still owner-bound.
    let replay = Import {
        session_id: *session.id(),
        expires_at: session.expires_at(),
        sealed_state: kms_protocol::Bytes(sealed_state),
        encrypted_key: victim_ct.clone(),
    };
    assert_eq!(a.call(PATH_IMPORT, &replay).await.0, 409);
    d.stop_se();
    d.start_se();
    a.http = reqwest::Client::new(); // the old connections died with the process
    let (status, v) = a.call(PATH_IMPORT, &replay).await;
    assert_eq!(status, 201);
    let copy: WalletRecord = serde_json::from_value(v["record"].clone()).unwrap();
    assert_eq!(copy.owner_public_key, Some(*owner.public_key()));
    assert_eq!(a.export(copy.clone(), mine, None).await.0, 401);
    assert_eq!(a.export(copy, mine, Some(seen_auth.clone())).await.0, 403);
    // 8. Its own session, its own plaintext: the attacker can import keys it
    //    knows, never learn one it does not.
    let (_, started) = a.call(PATH_SESSIONS, &json!({"client_nonce": null})).await;
    let env: ImportEnvelope = serde_json::from_value(started["envelope"].clone()).unwrap();
    let guess = generate_key_material(KeyType::Secp256k1).unwrap();
    let ct = hpke::seal(
        &env.session_public_key,
        &hpke::info(labels::IMPORT, &env.session_id),
        guess.to_import_plaintext().expose(),
    )
    .unwrap();
    let imp = Import {
        session_id: env.session_id,
        expires_at: env.expires_at,
        sealed_state: serde_json::from_value(started["sealed_state"].clone()).unwrap(),
        encrypted_key: ct,
    };
    assert_eq!(a.call(PATH_IMPORT, &imp).await.0, 201);
    // 9. An authorization that has expired.
    let short = authorize_export(&owner, &w, &mine, now() + 1).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(a.export(rec.clone(), mine, Some(short)).await.0, 403);

    // 10. Covering its tracks: every attempt above is in the audit chain.
    //     Deleting the refusals, or rewriting them under its own key, breaks
    //     the chain for anyone holding the pinned identity key.
    let identity = *kms.identity();
    let mut records = Vec::new();
    for _ in 0..100 {
        records = kms_cli::fetch_all(&d.api_url()).await.unwrap();
        let contiguous = records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == i as u64 + 1);
        if contiguous
            && records
                .iter()
                .filter(|r| r.outcome == "authorization_failed")
                .count()
                >= 6
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(matches!(
        kms_cli::verify(&records, None, &identity),
        kms_cli::Verdict::Ok { .. }
    ));
    let refused: Vec<u64> = records
        .iter()
        .filter(|r| r.outcome != "ok")
        .map(|r| r.seq)
        .collect();
    assert!(
        refused.len() >= 8,
        "the attempts were recorded: {refused:?}"
    );
    let scrubbed: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == "ok")
        .cloned()
        .collect();
    assert!(matches!(
        kms_cli::verify(&scrubbed, None, &identity),
        kms_cli::Verdict::Bad(_)
    ));
    let mut forged = records.clone();
    let i = usize::try_from(refused[0] - 1).unwrap();
    let mut entry = forged[i].entry();
    entry.outcome = "ok".into();
    forged[i] = kms_crypto::audit::seal_record(
        &thief,
        forged[i].seq,
        forged[i].time,
        forged[i].prev_hash,
        entry,
    )
    .unwrap();
    match kms_cli::verify(&forged, None, &identity) {
        kms_cli::Verdict::Bad(e) => assert_eq!(e.seq, forged[i].seq),
        other => panic!("a forged record verified: {other:?}"),
    }
}

async fn kms_store_session_state(d: &Deployment, id: &Id) -> Vec<u8> {
    let store = kms_store::open(&format!("sqlite://{}", d.db_path().display()))
        .await
        .unwrap();
    store.session(id).await.unwrap().unwrap().sealed_state
}

async fn post_complete(d: &Deployment, id: &Id, ct: &HpkeCiphertext) -> Value {
    let a = kms_e2e::post_json(
        &format!("{}/v1/import-sessions/{id}/complete", d.api_url()),
        &json!({"encrypted_key": kms_protocol::b64::encode(ct.as_bytes())}),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body
}
