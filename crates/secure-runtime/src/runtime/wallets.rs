//! Generate, derive and sign (docs/protocol.md §§7–9): the operations that
//! use a wallet's key inside the trusted environment. Each is audited,
//! granted or refused, and its result leaves only with its record.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use kms_crypto::audit::fingerprint;
use kms_crypto::hd::ExtendedKey;
use kms_crypto::material::{KeyMaterial, KeyUseError, WalletKey};
use kms_crypto::{envelope, messages, rng, sha256, sign};
use kms_protocol::api::{
    Algorithm, Authorization, DerivedKey, GenerateReceipt, SignRequest, SignResponse,
};
use kms_protocol::audit::{AuditEntry, AuditEvent, Digest32};
use kms_protocol::internal::{Derive, Derived, Generate, Generated, Sign, Signed, WalletRecord};
use kms_protocol::{Bytes, Bytes32, Curve, DerivationPath, Id, KeyType, P256PublicKey, Signature};

use super::{Refused, TrustedEnv, MAX_AUTHORIZATION_WINDOW};
use crate::EnvError;

/// How many HD nodes the secure environment keeps by default.
pub const DEFAULT_HD_NODE_CACHE_ENTRIES: usize = 4096;

/// HD nodes recently used, per (wallet, curve, path): each wallet's root
/// `m` (a `bip39` root costs a 2048-round PBKDF2) and the nodes it was
/// asked for (a BIP-44 path is five HMACs and point multiplications),
/// which would otherwise be paid on every derive and sign. Bounded, least
/// recently used out first; an evicted node is zeroized when its last user
/// drops it. A wallet's material never changes for its id (the id is bound
/// into its envelope's AAD and never reused), and the envelope is still
/// opened and its owner checked on every request, so a hit skips only the
/// derivation.
pub(crate) struct HdNodeCache {
    nodes: Option<Mutex<NodeLru>>,
}

type NodeLru = lru::LruCache<(Id, Curve, DerivationPath), Arc<ExtendedKey>>;

/// What a signature answer carries besides the ids: the public key, the
/// 64 signature bytes, the ECDSA recovery id.
struct Signature64 {
    public_key: Vec<u8>,
    signature: [u8; 64],
    recovery_id: Option<u8>,
}

impl HdNodeCache {
    pub(crate) fn new(entries: usize) -> Self {
        Self {
            nodes: NonZeroUsize::new(entries).map(|n| Mutex::new(lru::LruCache::new(n))),
        }
    }

    fn get(&self, key: &(Id, Curve, DerivationPath)) -> Option<Arc<ExtendedKey>> {
        let nodes = self.nodes.as_ref()?;
        nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn put(&self, key: (Id, Curve, DerivationPath), node: &Arc<ExtendedKey>) {
        if let Some(nodes) = &self.nodes {
            nodes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(key, node.clone());
        }
    }

    /// The node at `path` on `curve`, from the cache or derived from the
    /// (cached) root.
    fn node(
        &self,
        wallet_id: Id,
        curve: Curve,
        path: &DerivationPath,
        material: &KeyMaterial,
    ) -> Result<Arc<ExtendedKey>, KeyUseError> {
        if let Some(node) = self.get(&(wallet_id, curve, *path)) {
            return Ok(node);
        }
        let root_key = (wallet_id, curve, DerivationPath::master());
        let root = match self.get(&root_key) {
            Some(root) => root,
            None => {
                let root = Arc::new(material.hd_root(curve)?);
                self.put(root_key, &root);
                root
            }
        };
        if path.depth() == 0 {
            return Ok(root);
        }
        let node = Arc::new(root.derive(path)?);
        self.put((wallet_id, curve, *path), &node);
        Ok(node)
    }
}

impl From<KeyUseError> for EnvError {
    fn from(e: KeyUseError) -> Self {
        match e {
            KeyUseError::Unsupported(m) => EnvError::UnsupportedOperation(m),
            KeyUseError::Crypto(c) => EnvError::Crypto(c),
        }
    }
}

/// What the request-independent part of an audit entry learned before
/// the operation failed (the owner is known only once the record opens).
#[derive(Default)]
struct Seen {
    owner: Option<P256PublicKey>,
}

impl TrustedEnv<'_> {
    fn open_record(&self, r: &WalletRecord) -> Result<KeyMaterial, EnvError> {
        Ok(envelope::open_wallet(
            &self.keys,
            &r.wallet_id,
            r.key_type,
            r.wrapped_key.as_bytes(),
            r.ciphertext.as_bytes(),
        )?)
    }

    /// The owner's authorization, checked as docs/protocol.md §6 has it
    /// (export and sign):
    /// 401 without one, 403 when expired, too far ahead or not verifying
    /// over `message(expires_at, nonce)`.
    pub(super) fn check_owner(
        &self,
        owner: &P256PublicKey,
        auth: Option<&Authorization>,
        message: impl FnOnce(u64, &[u8]) -> Vec<u8>,
    ) -> Result<(), EnvError> {
        let auth = auth.ok_or(EnvError::AuthorizationRequired)?;
        let now = self.now();
        if auth.expires_at <= now || auth.expires_at > now.saturating_add(MAX_AUTHORIZATION_WINDOW)
        {
            return Err(EnvError::AuthorizationFailed);
        }
        let msg = message(auth.expires_at, auth.nonce.as_bytes());
        sign::verify(owner, &msg, &auth.signature).map_err(|_| EnvError::AuthorizationFailed)
    }

    /// The key at `path` on `curve` of an HD wallet, through the node cache.
    fn hd_node(
        &self,
        wallet_id: Id,
        material: &KeyMaterial,
        curve: Curve,
        path: &DerivationPath,
    ) -> Result<Arc<ExtendedKey>, EnvError> {
        // The §8 checks first, so a refused request costs no seed.
        material.check_derivation(curve, path)?;
        Ok(self.t.hd_nodes.node(wallet_id, curve, path, material)?)
    }

    fn generate_inner(&self, req: &Generate) -> Result<(GenerateReceipt, WalletRecord), EnvError> {
        if let Some(owner) = &req.owner_public_key {
            sign::check_point(owner).map_err(|_| EnvError::InvalidPublicKey)?;
        }
        if req.key_type == KeyType::Raw {
            return Err(EnvError::BadRequest(
                "key_type raw cannot be generated; import it instead",
            ));
        }
        let material = KeyMaterial::generate_with_rng(
            req.key_type,
            req.owner_public_key,
            &mut rng::SystemRng,
        )?;
        let public_key = material
            .public_key()
            .map_err(|_| EnvError::Crypto(kms_crypto::CryptoError::Backend("generated key")))?;
        let wallet_id = self.new_id()?;
        let sealed = envelope::seal_wallet(&self.keys, &wallet_id, &material)?;
        let msg = messages::generate_receipt(
            &wallet_id,
            material.key_type(),
            public_key.as_deref(),
            material.owner_public_key(),
            req.client_nonce.as_ref().map(|n| n.as_bytes()),
        );
        let signature = self.keys.identity().sign(&msg)?;
        let now = self.now();
        let public_key = public_key.map(Bytes);
        Ok((
            GenerateReceipt {
                wallet_id,
                key_type: material.key_type(),
                public_key: public_key.clone(),
                owner_public_key: req.owner_public_key,
                created_at: now,
                signature,
            },
            WalletRecord {
                wallet_id,
                key_type: material.key_type(),
                public_key,
                owner_public_key: req.owner_public_key,
                created_at: now,
                master_key_version: sealed.master_key_version,
                wrapped_key: Bytes(sealed.wrapped_key),
                ciphertext: Bytes(sealed.ciphertext),
            },
        ))
    }

    /// Makes a wallet from the secure environment's CSPRNG (§7), audited.
    pub fn generate(&self, req: &Generate) -> Result<Generated, Refused> {
        let mut entry = AuditEntry::new(AuditEvent::WalletGenerated, "ok");
        entry.key_type = Some(req.key_type);
        entry.owner_fingerprint = req.owner_public_key.as_ref().map(fingerprint);
        match self.generate_inner(req) {
            Ok((receipt, record)) => {
                entry.wallet_id = Some(receipt.wallet_id);
                let audit = self
                    .record(entry)
                    .map_err(|error| Refused { error, audit: None })?;
                Ok(Generated {
                    receipt,
                    record,
                    audit,
                })
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }

    fn derive_inner(&self, req: &Derive, seen: &mut Seen) -> Result<DerivedKey, EnvError> {
        let r = &req.record;
        let material = self.open_record(r)?;
        seen.owner = material.owner_public_key().copied();
        let node = self.hd_node(r.wallet_id, &material, req.curve, &req.path)?;
        let chain_code = node.chain_code();
        let msg = messages::derived_key(
            &r.wallet_id,
            req.curve,
            &req.path,
            node.public_key(),
            &chain_code,
        );
        Ok(DerivedKey {
            wallet_id: r.wallet_id,
            curve: req.curve,
            path: req.path,
            public_key: Bytes(node.public_key().to_vec()),
            chain_code: Bytes32::from_array(chain_code),
            signature: self.keys.identity().sign(&msg)?,
        })
    }

    /// The public key and chain code at a path of an HD wallet (§8), signed
    /// and audited. Needs no owner authorization: it reveals no secret.
    pub fn derive(&self, req: &Derive) -> Result<Derived, Refused> {
        let mut seen = Seen::default();
        let result = self.derive_inner(req, &mut seen);
        let mut entry = AuditEntry::new(AuditEvent::KeyDerived, "ok");
        entry.wallet_id = Some(req.record.wallet_id);
        entry.key_type = Some(req.record.key_type);
        entry.owner_fingerprint = seen.owner.as_ref().map(fingerprint);
        entry.curve = Some(req.curve);
        entry.path = Some(req.path);
        match result {
            Ok(key) => {
                let audit = self
                    .record(entry)
                    .map_err(|error| Refused { error, audit: None })?;
                Ok(Derived { key, audit })
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }

    fn sign_inner(&self, req: &Sign, seen: &mut Seen) -> Result<SignResponse, EnvError> {
        let r = &req.record;
        let s = &req.request;
        let material = self.open_record(r)?;
        seen.owner = material.owner_public_key().copied();
        if let Some(owner) = material.owner_public_key() {
            self.check_owner(owner, s.authorization.as_ref(), |expires_at, nonce| {
                messages::sign_request(
                    &r.wallet_id,
                    s.algorithm,
                    s.path.as_ref(),
                    s.payload.as_bytes(),
                    s.merkle_root.as_ref().map(Bytes32::as_bytes),
                    expires_at,
                    nonce,
                )
            })?;
        }
        let curve = s.algorithm.curve();
        let key = match (material.key_type(), &s.path) {
            (KeyType::Raw, _) => {
                return Err(EnvError::UnsupportedOperation("a raw wallet cannot sign"))
            }
            (k, Some(path)) if k.is_hd() => {
                let node = self.hd_node(r.wallet_id, &material, curve, path)?;
                WalletKey::from_node(&node)?
            }
            _ => material.signing_key(curve, s.path.as_ref())?,
        };
        let out = sign_with(&key, s)?;
        Ok(SignResponse {
            wallet_id: r.wallet_id,
            algorithm: s.algorithm,
            path: s.path,
            public_key: Bytes(out.public_key),
            signature: Signature::from_array(out.signature),
            recovery_id: out.recovery_id,
        })
    }

    /// Signs with a wallet's key (§9), after the owner's authorization for
    /// an owner-bound wallet; audited with the SHA-256 of the payload.
    pub fn sign(&self, req: &Sign) -> Result<Signed, Refused> {
        let mut seen = Seen::default();
        let result = self.sign_inner(req, &mut seen);
        let s = &req.request;
        let mut entry = AuditEntry::new(AuditEvent::Sign, "ok");
        entry.wallet_id = Some(req.record.wallet_id);
        entry.key_type = Some(req.record.key_type);
        entry.owner_fingerprint = seen.owner.as_ref().map(fingerprint);
        entry.algorithm = Some(s.algorithm);
        entry.path = s.path;
        entry.payload_sha256 = Some(Digest32(sha256(s.payload.as_bytes())));
        match result {
            Ok(response) => {
                let audit = self
                    .record(entry)
                    .map_err(|error| Refused { error, audit: None })?;
                Ok(Signed { response, audit })
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }
}

/// The signature of §9's table for `req.algorithm` by `key`: the public
/// key answered, the 64 signature bytes, and the recovery id for ECDSA on
/// secp256k1.
fn sign_with(key: &WalletKey, req: &SignRequest) -> Result<Signature64, EnvError> {
    let payload = req.payload.as_bytes();
    let digest = || -> Result<[u8; 32], EnvError> {
        payload
            .try_into()
            .map_err(|_| EnvError::BadRequest("this algorithm signs a 32-byte payload"))
    };
    let wrong_curve = || EnvError::UnsupportedOperation("this wallet's key is on another curve");
    match (req.algorithm, key) {
        (Algorithm::EcdsaSecp256k1, WalletKey::Secp256k1(k)) => {
            let sig = k.sign_ecdsa(&digest()?)?;
            Ok(Signature64 {
                public_key: k.public_key().to_vec(),
                signature: sig.signature,
                recovery_id: Some(sig.recovery_id),
            })
        }
        (Algorithm::SchnorrSecp256k1, WalletKey::Secp256k1(k)) => {
            let aux = rng::array::<32>(&mut rng::SystemRng)?;
            let (signature, xonly) = k.sign_schnorr(&digest()?, &aux);
            Ok(Signature64 {
                public_key: xonly.to_vec(),
                signature,
                recovery_id: None,
            })
        }
        (Algorithm::SchnorrSecp256k1Taproot, WalletKey::Secp256k1(k)) => {
            let aux = rng::array::<32>(&mut rng::SystemRng)?;
            let root = req.merkle_root.as_ref().map(Bytes32::as_bytes);
            let (signature, output) = k.sign_taproot(&digest()?, root, &aux)?;
            Ok(Signature64 {
                public_key: output.to_vec(),
                signature,
                recovery_id: None,
            })
        }
        (Algorithm::Ed25519, WalletKey::Ed25519(k)) => Ok(Signature64 {
            public_key: k.public_key().to_vec(),
            signature: k.sign(payload),
            recovery_id: None,
        }),
        (Algorithm::EcdsaP256, WalletKey::P256(k)) => Ok(Signature64 {
            public_key: k.public_key_compressed().to_vec(),
            signature: k.sign_digest(&digest()?)?,
            recovery_id: None,
        }),
        _ => Err(wrong_curve()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache only ever answers what derivation would: with room for
    /// one node (so every request evicts another), with plenty, and off.
    #[test]
    fn cached_nodes_equal_derived_ones() {
        let material =
            KeyMaterial::generate_with_rng(KeyType::Bip39, None, &mut rng::SystemRng).unwrap();
        let wallet = Id::from_bytes([5; 16]);
        let paths = ["m", "m/44'/60'/0'/0/0", "m/0", "m/44'/60'/0'/0/0", "m/1'/2"]
            .map(|p| DerivationPath::parse(p).unwrap());
        for entries in [0, 1, 64] {
            let cache = HdNodeCache::new(entries);
            for _ in 0..2 {
                for curve in [Curve::Secp256k1, Curve::P256] {
                    for path in &paths {
                        let want = material.derive(curve, path).unwrap();
                        let got = cache.node(wallet, curve, path, &material).unwrap();
                        assert_eq!(got.public_key(), want.public_key(), "{entries} {path}");
                        assert_eq!(got.chain_code(), want.chain_code());
                        assert!(got.private_key().ct_eq(want.private_key()));
                    }
                }
            }
        }
    }
}
