//! The limit: every operation as the secure environment runs it, minus the
//! network, the JSON of the internal API and the store.

use std::time::{Duration, Instant};

use kms_crypto::hpke::{self, HpkeSecretKey};
use kms_crypto::keyset::KeySet;
use kms_crypto::labels;
use kms_protocol::api::{Algorithm, GenerateWallet, SignRequest};
use kms_protocol::data_key::{DecryptDataKey, EncryptionContext, GenerateDataKey};
use kms_protocol::internal::{Export, Import, SessionStarted, Sign};
use kms_protocol::{Bytes, DerivationPath, KeyType, Nonce};
use secure_runtime::audit::AuditLog;
use secure_runtime::runtime::system_clock;
use secure_runtime::SecureRuntime;

use crate::Spread;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per run of each operation.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Runs per operation (the spread is over these).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Directory for the throw-away audit log (a tmpfs keeps fsync free).
    #[arg(long, default_value = "/dev/shm")]
    scratch: std::path::PathBuf,
    /// Print JSON lines instead of a table.
    /// Also append the results as JSON lines to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

/// Runs `op` in batches until `seconds` pass; `prepare` makes each batch's
/// inputs outside the timing. Returns operations per second.
fn measure<T>(
    seconds: f64,
    mut prepare: impl FnMut(usize) -> Vec<T>,
    mut op: impl FnMut(T),
) -> f64 {
    let budget = Duration::from_secs_f64(seconds);
    let mut spent = Duration::ZERO;
    let mut done = 0u64;
    while spent < budget {
        let batch = prepare(256);
        let start = Instant::now();
        for item in batch {
            op(item);
            done += 1;
        }
        spent += start.elapsed();
    }
    done as f64 / spent.as_secs_f64()
}

/// A secure runtime with its audit log in `dir`, one imported wallet, and
/// the requests the limit (and `floor-server --crypto`) run against it.
pub(crate) struct Fixture {
    pub rt: SecureRuntime,
    pub material: kms_client::KeyMaterial,
    pub export: Export,
    pub generate: GenerateDataKey,
    pub decrypt: DecryptDataKey,
    /// Sign requests by generated wallets: ecdsa-secp256k1 and ed25519 by
    /// single-key wallets, and ecdsa-secp256k1 at a BIP-44 path of a bip39
    /// wallet (its root node cached after the first request).
    pub sign_secp256k1: Sign,
    pub sign_ed25519: Sign,
    pub sign_ecdsa_p256: Sign,
    pub sign_hd: Sign,
}

/// A wallet generated inside `rt` and a request for it to sign 32 bytes.
fn sign_request(
    rt: &SecureRuntime,
    key_type: KeyType,
    algorithm: Algorithm,
    path: Option<&str>,
) -> anyhow::Result<Sign> {
    let generated = rt
        .trusted_env_exec(|env| {
            env.generate(&GenerateWallet {
                key_type,
                owner_public_key: None,
                client_nonce: None,
            })
        })
        .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
    Ok(Sign {
        record: generated.record,
        request: SignRequest {
            algorithm,
            path: path.map(DerivationPath::parse).transpose()?,
            payload: Bytes(kms_crypto::sha256(b"a transaction to sign").to_vec()),
            merkle_root: None,
            authorization: None,
        },
    })
}

/// A session and the import that completes it, sealed as a client seals it.
pub(crate) fn import_one(
    rt: &SecureRuntime,
    material: &kms_client::KeyMaterial,
) -> anyhow::Result<Import> {
    let nonce = Nonce::from_bytes(&[7; 32])?;
    let s = rt
        .trusted_env_exec(|env| env.start_session(Some(&nonce)))
        .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
    seal_import(s, material)
}

/// The import that completes session `s`, sealed as a client seals it.
pub(crate) fn seal_import(
    s: SessionStarted,
    material: &kms_client::KeyMaterial,
) -> anyhow::Result<Import> {
    let ct = hpke::seal(
        &s.envelope.session_public_key,
        &hpke::info(labels::IMPORT, &s.envelope.session_id),
        material.to_import_plaintext().expose(),
    )?;
    Ok(Import {
        session_id: s.envelope.session_id,
        expires_at: s.envelope.expires_at,
        sealed_state: s.sealed_state,
        encrypted_key: ct,
    })
}

pub(crate) fn fixture(dir: &std::path::Path) -> anyhow::Result<Fixture> {
    let keys = KeySet::generate()?;
    let identity = *keys.identity().public_key();
    let audit = AuditLog::open(&dir.join("audit.log"), &identity, true)?;
    let rt = SecureRuntime::new(keys, audit, 600, String::new(), system_clock());
    let material = kms_client::generate_key_material(KeyType::Secp256k1)?;
    let imported = rt.trusted_env_exec(|env| {
        env.import(&import_one(&rt, &material)?)
            .map_err(|e| anyhow::anyhow!("{:?}", e.error))
    })?;
    let recipient = HpkeSecretKey::generate()?;
    let export = Export {
        record: imported.record.clone(),
        recipient_public_key: *recipient.public_key(),
        authorization: None,
    };
    let context: EncryptionContext = serde_json::from_str(r#"{"tenant":"bench"}"#)?;
    let generate = GenerateDataKey {
        encryption_context: context.clone(),
        recipient_public_key: *recipient.public_key(),
    };
    let dk = rt
        .trusted_env_exec(|env| env.generate_data_key(&generate))
        .map_err(|e| anyhow::anyhow!("{:?}", e.error))?;
    let decrypt = DecryptDataKey {
        wrapped_key: dk.data_key.wrapped_key.clone(),
        encryption_context: context,
        recipient_public_key: *recipient.public_key(),
    };
    let sign_secp256k1 = sign_request(&rt, KeyType::Secp256k1, Algorithm::EcdsaSecp256k1, None)?;
    let sign_ed25519 = sign_request(&rt, KeyType::Ed25519, Algorithm::Ed25519, None)?;
    let sign_ecdsa_p256 = sign_request(&rt, KeyType::P256, Algorithm::EcdsaP256, None)?;
    let sign_hd = sign_request(
        &rt,
        KeyType::Bip39,
        Algorithm::EcdsaSecp256k1,
        Some("m/44'/60'/0'/0/0"),
    )?;
    Ok(Fixture {
        rt,
        material,
        export,
        generate,
        decrypt,
        sign_secp256k1,
        sign_ed25519,
        sign_ecdsa_p256,
        sign_hd,
    })
}

pub fn run(a: &Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(&a.scratch).or_else(|_| tempfile::tempdir())?;
    let Fixture {
        rt,
        material,
        export,
        generate,
        decrypt,
        sign_secp256k1,
        sign_ed25519,
        sign_ecdsa_p256,
        sign_hd,
    } = fixture(dir.path())?;
    let nonce = Nonce::from_bytes(&[7; 32])?;

    type Case<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>);
    let secs = a.seconds;
    let sign_case = |req: &Sign| {
        measure(
            secs,
            |n| vec![(); n],
            |()| {
                let r = rt.trusted_env_exec(|env| env.sign(req));
                assert!(r.is_ok());
            },
        )
    };
    let mut cases: Vec<Case<'_>> = vec![
        (
            "import-start",
            Box::new(|| {
                measure(
                    secs,
                    |n| vec![(); n],
                    |()| {
                        let r = rt.trusted_env_exec(|env| env.start_session(Some(&nonce)));
                        assert!(r.is_ok());
                    },
                )
            }),
        ),
        (
            "import-finish",
            Box::new(|| {
                measure(
                    secs,
                    |n| {
                        (0..n)
                            .map(|_| import_one(&rt, &material).expect("a session"))
                            .collect()
                    },
                    |req| {
                        let r = rt.trusted_env_exec(|env| env.import(&req));
                        assert!(r.is_ok());
                    },
                )
            }),
        ),
        (
            "export",
            Box::new(|| {
                measure(
                    secs,
                    |n| vec![(); n],
                    |()| {
                        let r = rt.trusted_env_exec(|env| env.export(&export));
                        assert!(r.is_ok());
                    },
                )
            }),
        ),
        (
            "data-key-generate",
            Box::new(|| {
                measure(
                    secs,
                    |n| vec![(); n],
                    |()| {
                        let r = rt.trusted_env_exec(|env| env.generate_data_key(&generate));
                        assert!(r.is_ok());
                    },
                )
            }),
        ),
        (
            "data-key-decrypt",
            Box::new(|| {
                measure(
                    secs,
                    |n| vec![(); n],
                    |()| {
                        let r = rt.trusted_env_exec(|env| env.decrypt_data_key(&decrypt));
                        assert!(r.is_ok());
                    },
                )
            }),
        ),
        (
            "sign-ecdsa-secp256k1",
            Box::new(|| sign_case(&sign_secp256k1)),
        ),
        ("sign-ed25519", Box::new(|| sign_case(&sign_ed25519))),
        ("sign-ecdsa-p256", Box::new(|| sign_case(&sign_ecdsa_p256))),
        ("sign-bip39-path", Box::new(|| sign_case(&sign_hd))),
    ];
    {
        println!(
            "{:<20} {:>12} {:>12} {:>12}   (ops/s on one core, {} runs of {} s)",
            "operation", "median", "min", "max", a.runs, a.seconds
        );
    }
    for (name, case) in cases.iter_mut() {
        let s = Spread::of((0..a.runs).map(|_| case()).collect());
        println!(
            "{name:<20} {:>12.0} {:>12.0} {:>12.0}",
            s.median, s.min, s.max
        );
        crate::append_json(
            a.json_out.as_deref(),
            &serde_json::json!({"bench": "limit", "op": name, "ops_per_s": s}),
        )?;
    }
    Ok(())
}
