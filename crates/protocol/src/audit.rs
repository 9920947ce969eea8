//! Audit records: what the secure environment did, signed with its identity
//! key and chained by hash, so deleting, reordering or changing any record
//! is detectable offline (`docs/audit-log.md`).
//!
//! The signed body of a record (format v1):
//! ```text
//! "kms/audit-record/v1" ‖ 0x00 ‖ u64be(seq) ‖ u64be(time) ‖ prev_hash[32]
//!   ‖ u8(len(event)) ‖ event ‖ u8(len(outcome)) ‖ outcome
//!   ‖ u8(len(session_id)) ‖ session_id ‖ u8(len(wallet_id)) ‖ wallet_id
//!   ‖ u8(len(key_type)) ‖ key_type
//!   ‖ u8(len(recipient_fingerprint)) ‖ recipient_fingerprint
//!   ‖ u8(len(owner_fingerprint)) ‖ owner_fingerprint
//! ```
//! An absent field has length 0; ids are 16 bytes, fingerprints 32
//! (SHA-256 of the 65-byte public key). Records of key-set changes and data
//! keys carry two more fields, appended only when either is present (so
//! every earlier record's body is unchanged):
//! ```text
//!   ‖ u8(len(data_key_id)) ‖ data_key_id ‖ u8(len(master_key_version)) ‖ u32be(master_key_version)
//! ```
//! Records of generated wallets, derivations and signatures carry four
//! more, appended only when any is present (after the two above, which
//! are then written too, empty if absent):
//! ```text
//!   ‖ u8(len(algorithm)) ‖ algorithm ‖ u8(len(curve)) ‖ curve ‖ u8(len(path)) ‖ path
//!   ‖ u8(len(payload_sha256)) ‖ payload_sha256
//! ```
//! Records of the key-provider API (docs/bitgo.md) carry four more,
//! appended only when any is present (after all of the above):
//! ```text
//!   ‖ u8(len(provider_key)) ‖ provider_key ‖ u8(len(key_source)) ‖ key_source
//!   ‖ u8(len(provider_key_type)) ‖ provider_key_type ‖ u8(len(coin)) ‖ coin
//! ```
//! `provider_key` is the SHA-256 of the stored key's `pub` string (a `tss`
//! key's can be long), the others their ASCII names.
//! `algorithm`, `curve` and `path` are their ASCII names (a path is at
//! most 193 bytes), `payload_sha256` the 32-byte SHA-256 of the signed
//! payload — never the payload itself. `signature` is the identity key's
//! ECDSA P-256 / SHA-256 signature (P1363) over the body; the record's hash
//! is `SHA-256(body ‖ signature)`, and the next record carries it as
//! `prev_hash`. The first record (seq 1) has 32 zero bytes as `prev_hash`.
//! Records never hold a secret or a ciphertext.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::Algorithm;
use crate::provider::{KeySource, ProviderKeyType};
use crate::{Curve, DerivationPath, Id, KeyType, Signature};

/// Domain-separation label of the signed body.
pub const AUDIT_RECORD_LABEL: &[u8] = b"kms/audit-record/v1";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEvent {
    /// A new key set was created (first start).
    KeysetCreated,
    /// The key set was opened (every start).
    KeysetOpened,
    /// An import session started (§2).
    ImportSessionStarted,
    /// An import was completed or refused (§3).
    Import,
    /// An export was granted or refused (§4, §6).
    Export,
    /// A new master key version became current.
    MasterKeyRotated,
    /// A master key version was retired (deleted from the key set).
    MasterKeyRetired,
    /// The key set was re-sealed under another root key or provider.
    KeysetResealed,
    /// A data key was generated (`POST /v1/data-keys`).
    DataKeyGenerated,
    /// A data key was decrypted, or its decryption refused.
    DataKeyDecrypted,
    /// A wallet was generated inside the secure environment (§7).
    WalletGenerated,
    /// A public key was derived from an HD wallet, or the derivation refused (§8).
    KeyDerived,
    /// A payload was signed, or the signature refused (§9).
    Sign,
    /// The key provider stored a key for BitGo's wallet manager, or refused to.
    ProviderKeyStored,
    /// The key provider made and stored a key (`POST /key/generate`).
    ProviderKeyGenerated,
    /// The key provider gave a stored key back, or refused to.
    ProviderKeyFetched,
    /// The key provider signed with a stored key, or refused to.
    ProviderSign,
    /// The key provider made a data key.
    ProviderDataKeyGenerated,
    /// The key provider opened a data key, or refused to.
    ProviderDataKeyDecrypted,
}

impl AuditEvent {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::KeysetCreated => "keyset_created",
            Self::KeysetOpened => "keyset_opened",
            Self::ImportSessionStarted => "import_session_started",
            Self::Import => "import",
            Self::Export => "export",
            Self::MasterKeyRotated => "master_key_rotated",
            Self::MasterKeyRetired => "master_key_retired",
            Self::KeysetResealed => "keyset_resealed",
            Self::DataKeyGenerated => "data_key_generated",
            Self::DataKeyDecrypted => "data_key_decrypted",
            Self::WalletGenerated => "wallet_generated",
            Self::KeyDerived => "key_derived",
            Self::Sign => "sign",
            Self::ProviderKeyStored => "provider_key_stored",
            Self::ProviderKeyGenerated => "provider_key_generated",
            Self::ProviderKeyFetched => "provider_key_fetched",
            Self::ProviderSign => "provider_sign",
            Self::ProviderDataKeyGenerated => "provider_data_key_generated",
            Self::ProviderDataKeyDecrypted => "provider_data_key_decrypted",
        }
    }
}

/// 32 bytes shown as lowercase hex: a hash or a key fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest32(pub [u8; 32]);

impl fmt::Display for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest32({self})")
    }
}

impl Serialize for Digest32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 64 lowercase hex digits");
        if text.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let nib = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = (nib(pair[0]).ok_or_else(bad)? << 4) | nib(pair[1]).ok_or_else(bad)?;
        }
        Ok(Self(out))
    }
}

/// One audit record as stored and served (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: u64,
    pub event: AuditEvent,
    /// `"ok"`, or the docs/protocol.md error code the operation was refused with.
    pub outcome: String,
    pub session_id: Option<Id>,
    pub wallet_id: Option<Id>,
    pub key_type: Option<KeyType>,
    /// SHA-256 of the recipient's 65-byte public key (exports).
    pub recipient_fingerprint: Option<Digest32>,
    /// SHA-256 of the owner's 65-byte public key (owner-bound wallets).
    pub owner_fingerprint: Option<Digest32>,
    /// The data key (data-key events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key_id: Option<Id>,
    /// The master key version concerned (rotation, retirement, data keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_version: Option<u32>,
    /// The signature algorithm (signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// The curve of a derived key (derivations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curve: Option<Curve>,
    /// The derivation path (derivations, HD signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<DerivationPath>,
    /// SHA-256 of the signed payload (signatures); never the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<Digest32>,
    /// SHA-256 of a key-provider key's `pub` (docs/bitgo.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key: Option<Digest32>,
    /// `user` or `backup` (key-provider records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_source: Option<KeySource>,
    /// `independent` or `tss` (key-provider records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_key_type: Option<ProviderKeyType>,
    /// The coin a key-provider key was stored for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coin: Option<String>,
    pub prev_hash: Digest32,
    pub signature: Signature,
}

/// The content of a record before the secure environment numbers, chains
/// and signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub event: AuditEvent,
    pub outcome: String,
    pub session_id: Option<Id>,
    pub wallet_id: Option<Id>,
    pub key_type: Option<KeyType>,
    pub recipient_fingerprint: Option<Digest32>,
    pub owner_fingerprint: Option<Digest32>,
    pub data_key_id: Option<Id>,
    pub master_key_version: Option<u32>,
    pub algorithm: Option<Algorithm>,
    pub curve: Option<Curve>,
    pub path: Option<DerivationPath>,
    pub payload_sha256: Option<Digest32>,
    pub provider_key: Option<Digest32>,
    pub key_source: Option<KeySource>,
    pub provider_key_type: Option<ProviderKeyType>,
    pub coin: Option<String>,
}

impl AuditEntry {
    pub fn new(event: AuditEvent, outcome: impl Into<String>) -> Self {
        Self {
            event,
            outcome: outcome.into(),
            session_id: None,
            wallet_id: None,
            key_type: None,
            recipient_fingerprint: None,
            owner_fingerprint: None,
            data_key_id: None,
            master_key_version: None,
            algorithm: None,
            curve: None,
            path: None,
            payload_sha256: None,
            provider_key: None,
            key_source: None,
            provider_key_type: None,
            coin: None,
        }
    }

    fn has_provider_fields(&self) -> bool {
        self.provider_key.is_some()
            || self.key_source.is_some()
            || self.provider_key_type.is_some()
            || self.coin.is_some()
    }

    fn has_hd_fields(&self) -> bool {
        self.algorithm.is_some()
            || self.curve.is_some()
            || self.path.is_some()
            || self.payload_sha256.is_some()
    }
}

fn push_short(m: &mut Vec<u8>, x: &[u8]) {
    // Every field is at most 32 bytes or a short ASCII name.
    m.push(u8::try_from(x.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(x);
}

/// The signed body of a record with these contents (layout above).
pub fn signed_body(seq: u64, time: u64, prev_hash: &Digest32, e: &AuditEntry) -> Vec<u8> {
    let mut m = Vec::with_capacity(256);
    m.extend_from_slice(AUDIT_RECORD_LABEL);
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&time.to_be_bytes());
    m.extend_from_slice(&prev_hash.0);
    push_short(&mut m, e.event.as_str().as_bytes());
    push_short(&mut m, e.outcome.as_bytes());
    push_short(
        &mut m,
        e.session_id
            .as_ref()
            .map(|i| &i.as_bytes()[..])
            .unwrap_or_default(),
    );
    push_short(
        &mut m,
        e.wallet_id
            .as_ref()
            .map(|i| &i.as_bytes()[..])
            .unwrap_or_default(),
    );
    push_short(
        &mut m,
        e.key_type
            .map(|k| k.as_str().as_bytes())
            .unwrap_or_default(),
    );
    push_short(
        &mut m,
        e.recipient_fingerprint
            .as_ref()
            .map(|d| &d.0[..])
            .unwrap_or_default(),
    );
    push_short(
        &mut m,
        e.owner_fingerprint
            .as_ref()
            .map(|d| &d.0[..])
            .unwrap_or_default(),
    );
    if e.data_key_id.is_some()
        || e.master_key_version.is_some()
        || e.has_hd_fields()
        || e.has_provider_fields()
    {
        push_short(
            &mut m,
            e.data_key_id
                .as_ref()
                .map(|i| &i.as_bytes()[..])
                .unwrap_or_default(),
        );
        let v = e.master_key_version.map(u32::to_be_bytes);
        push_short(&mut m, v.as_ref().map(|b| &b[..]).unwrap_or_default());
    }
    if e.has_hd_fields() || e.has_provider_fields() {
        push_short(
            &mut m,
            e.algorithm
                .map(|a| a.as_str().as_bytes())
                .unwrap_or_default(),
        );
        push_short(
            &mut m,
            e.curve.map(|c| c.as_str().as_bytes()).unwrap_or_default(),
        );
        let path = e.path.map(|p| p.to_string()).unwrap_or_default();
        push_short(&mut m, path.as_bytes());
        push_short(
            &mut m,
            e.payload_sha256
                .as_ref()
                .map(|d| &d.0[..])
                .unwrap_or_default(),
        );
    }
    if e.has_provider_fields() {
        push_short(
            &mut m,
            e.provider_key
                .as_ref()
                .map(|d| &d.0[..])
                .unwrap_or_default(),
        );
        push_short(
            &mut m,
            e.key_source
                .map(|k| k.as_str().as_bytes())
                .unwrap_or_default(),
        );
        push_short(
            &mut m,
            e.provider_key_type
                .map(|k| k.as_str().as_bytes())
                .unwrap_or_default(),
        );
        push_short(&mut m, e.coin.as_deref().unwrap_or_default().as_bytes());
    }
    m
}

impl AuditRecord {
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            event: self.event,
            outcome: self.outcome.clone(),
            session_id: self.session_id,
            wallet_id: self.wallet_id,
            key_type: self.key_type,
            recipient_fingerprint: self.recipient_fingerprint,
            owner_fingerprint: self.owner_fingerprint,
            data_key_id: self.data_key_id,
            master_key_version: self.master_key_version,
            algorithm: self.algorithm,
            curve: self.curve,
            path: self.path,
            payload_sha256: self.payload_sha256,
            provider_key: self.provider_key,
            key_source: self.key_source,
            provider_key_type: self.provider_key_type,
            coin: self.coin.clone(),
        }
    }

    /// The bytes the signature covers.
    pub fn signed_body(&self) -> Vec<u8> {
        signed_body(self.seq, self.time, &self.prev_hash, &self.entry())
    }

    /// `signed_body ‖ signature`: what the record's hash is taken over.
    pub fn hashed_bytes(&self) -> Vec<u8> {
        let mut b = self.signed_body();
        b.extend_from_slice(self.signature.as_bytes());
        b
    }
}

/// `GET /v1/audit?after=SEQ&limit=N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// The last seq of this page when more follow.
    pub next: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_layout() {
        let mut e = AuditEntry::new(AuditEvent::Export, "ok");
        e.wallet_id = Some(Id::from_bytes([2; 16]));
        e.recipient_fingerprint = Some(Digest32([3; 32]));
        let b = signed_body(7, 9, &Digest32([1; 32]), &e);
        assert_eq!(&b[..20], b"kms/audit-record/v1\0");
        assert_eq!(&b[20..28], &7u64.to_be_bytes());
        assert_eq!(&b[28..36], &9u64.to_be_bytes());
        assert_eq!(&b[36..68], &[1; 32]);
        assert_eq!(&b[68..75], b"\x06export");
        assert_eq!(&b[75..78], b"\x02ok");
        assert_eq!(b[78], 0); // no session
        assert_eq!(b[79], 16);
        assert_eq!(b[96], 0); // no key type
        assert_eq!(b[97], 32);
        assert_eq!(b[130], 0); // no owner
        assert_eq!(b.len(), 131);
        // The optional tail appears only when one of its fields is set.
        e.master_key_version = Some(3);
        let t = signed_body(7, 9, &Digest32([1; 32]), &e);
        assert_eq!(&t[..131], &b[..]);
        assert_eq!(&t[131..], b"\x00\x04\x00\x00\x00\x03");
        // The derivation and signature fields come after it, which is
        // then written even when empty.
        let mut h = AuditEntry::new(AuditEvent::Sign, "ok");
        h.wallet_id = e.wallet_id;
        h.algorithm = Some(Algorithm::EcdsaSecp256k1);
        h.path = Some(DerivationPath::parse("m/0'/1").unwrap());
        h.payload_sha256 = Some(Digest32([9; 32]));
        let s = signed_body(7, 9, &Digest32([1; 32]), &h);
        let mut want = b"\x00\x00\x0fecdsa-secp256k1\x00\x06m/0'/1\x20".to_vec();
        want.extend_from_slice(&[9; 32]);
        assert!(s.ends_with(&want));
        // label, seq, time, prev, "sign", "ok", no session, the wallet, no
        // key type, recipient or owner: 97 bytes before the tail.
        assert_eq!(s.len(), 97 + want.len());
        let only_curve = AuditEntry {
            curve: Some(Curve::P256),
            ..AuditEntry::new(AuditEvent::KeyDerived, "ok")
        };
        let c = signed_body(1, 1, &Digest32([0; 32]), &only_curve);
        assert!(c.ends_with(b"\x00\x00\x00\x04p256\x00\x00"));
        // The key-provider fields come last, after every earlier group.
        let p = AuditEntry {
            key_source: Some(KeySource::Backup),
            coin: Some("tbtc".to_owned()),
            ..AuditEntry::new(AuditEvent::ProviderKeyFetched, "ok")
        };
        let b = signed_body(1, 1, &Digest32([0; 32]), &p);
        assert!(b.ends_with(b"\x00\x00\x00\x00\x00\x00\x00\x06backup\x00\x04tbtc"));
    }

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest32([0xab; 32]);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(j, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<Digest32>(&j).unwrap(), d);
        assert!(serde_json::from_str::<Digest32>(&format!("\"{}\"", "AB".repeat(32))).is_err());
    }
}
