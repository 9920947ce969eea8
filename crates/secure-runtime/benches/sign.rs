//! The per-core limit of signing (issue 17's speed section), in criterion:
//! - `crypto/*`: the signature alone, as kms-crypto computes it;
//! - `runtime/*`: the whole `SecureRuntime::sign` call the server makes —
//!   opening the wallet's envelope, the signature, and the audit record
//!   with its P-256 signature, written to a log on a tmpfs (`/dev/shm`
//!   when there is one), so the disk's fsync is not what is measured.
//!
//! `cargo bench -p secure-runtime --bench sign`. docs/performance.md
//! records the figures beside the load through both processes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_crypto::hd::{self, ExtendedKey};
use kms_crypto::keyset::KeySet;
use kms_crypto::rng::SystemRng;
use kms_crypto::{ed25519, p256, secp256k1};
use kms_protocol::api::{Algorithm, GenerateWallet, SignRequest};
use kms_protocol::internal::Sign;
use kms_protocol::{Bytes, Curve, DerivationPath, KeyType};
use secure_runtime::audit::AuditLog;
use secure_runtime::runtime::system_clock;
use secure_runtime::SecureRuntime;

const DIGEST: [u8; 32] = [0x5a; 32];
const AUX: [u8; 32] = [0x01; 32];

fn crypto(c: &mut Criterion) {
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    let mut rng = SystemRng;
    let k1 = secp256k1::PrivateKey::generate_with_rng(&mut rng).expect("a secp256k1 key");
    g.bench_function("ecdsa-secp256k1", |b| {
        b.iter(|| k1.sign_ecdsa(black_box(&DIGEST)).expect("signs"))
    });
    g.bench_function("schnorr-secp256k1", |b| {
        b.iter(|| k1.sign_schnorr(black_box(&DIGEST), &AUX))
    });
    g.bench_function("schnorr-secp256k1-taproot", |b| {
        b.iter(|| {
            k1.sign_taproot(black_box(&DIGEST), None, &AUX)
                .expect("signs")
        })
    });
    let ed = ed25519::PrivateKey::generate_with_rng(&mut rng).expect("an ed25519 key");
    g.bench_function("ed25519", |b| b.iter(|| ed.sign(black_box(&DIGEST))));
    let p = p256::PrivateKey::generate_with_rng(&mut rng).expect("a P-256 key");
    g.bench_function("ecdsa-p256", |b| {
        b.iter(|| p.sign_digest(black_box(&DIGEST)).expect("signs"))
    });
    // What the node cache saves an HD sign: the five steps of a BIP-44
    // path from the master node, and BIP-39's PBKDF2 before it.
    let master = ExtendedKey::master(Curve::Secp256k1, &[7; 64]).expect("a master node");
    let path = DerivationPath::parse("m/44'/60'/0'/0/0").expect("a path");
    g.bench_function("derive-secp256k1-m/44'/60'/0'/0/0", |b| {
        b.iter(|| master.derive(black_box(&path)).expect("derives"))
    });
    g.bench_function("bip39-seed-pbkdf2", |b| {
        b.iter(|| hd::bip39_seed(black_box(&[9; 32])).expect("a seed"))
    });
    g.finish();
}

/// A wallet generated inside `rt` and a request for it to sign 32 bytes.
fn sign_request(
    rt: &SecureRuntime,
    key_type: KeyType,
    algorithm: Algorithm,
    path: Option<&str>,
) -> Sign {
    let generated = rt
        .trusted_env_exec(|env| {
            env.generate(&GenerateWallet {
                key_type,
                owner_public_key: None,
                client_nonce: None,
            })
        })
        .unwrap_or_else(|e| panic!("generate {key_type}: {:?}", e.error));
    Sign {
        record: generated.record,
        request: SignRequest {
            algorithm,
            path: path.map(|p| DerivationPath::parse(p).expect("a path")),
            payload: Bytes(DIGEST.to_vec()),
            merkle_root: None,
            authorization: None,
        },
    }
}

fn runtime(c: &mut Criterion) {
    let scratch = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a scratch directory");
    let keys = KeySet::generate().expect("a key set");
    let identity = *keys.identity().public_key();
    let audit =
        AuditLog::open(&scratch.path().join("audit.log"), &identity, true).expect("an audit log");
    let rt = SecureRuntime::new(keys, audit, 600, String::new(), system_clock());
    let cases = [
        (
            "sign-ecdsa-secp256k1",
            KeyType::Secp256k1,
            Algorithm::EcdsaSecp256k1,
            None,
        ),
        (
            "sign-schnorr-secp256k1-taproot",
            KeyType::Secp256k1,
            Algorithm::SchnorrSecp256k1Taproot,
            None,
        ),
        ("sign-ed25519", KeyType::Ed25519, Algorithm::Ed25519, None),
        ("sign-ecdsa-p256", KeyType::P256, Algorithm::EcdsaP256, None),
        // The path's node is cached after the first call: the steady state.
        (
            "sign-ecdsa-secp256k1-bip39-m/44'/60'/0'/0/0",
            KeyType::Bip39,
            Algorithm::EcdsaSecp256k1,
            Some("m/44'/60'/0'/0/0"),
        ),
    ];
    let mut g = c.benchmark_group("runtime");
    g.throughput(Throughput::Elements(1));
    for (name, key_type, algorithm, path) in cases {
        let req = sign_request(&rt, key_type, algorithm, path);
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.trusted_env_exec(|env| env.sign(black_box(&req)))
                    .unwrap_or_else(|e| panic!("{name}: {:?}", e.error))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, crypto, runtime);
criterion_main!(benches);
