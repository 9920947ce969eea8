//! The byte layouts of every signed message (docs/protocol.md §§2–4, 6–9).
//! `‖` is concatenation; ids are their 16 bytes; integers big-endian.

use kms_protocol::api::Algorithm;
use kms_protocol::{Curve, DerivationPath, Id, KeyType, P256PublicKey};

use crate::{labels, sha256};

fn start(label: &[u8], capacity: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 1 + capacity);
    m.extend_from_slice(label);
    m.push(0);
    m
}

/// `u8(len(x)) ‖ x`, with an absent value as length 0.
fn push_short(m: &mut Vec<u8>, x: Option<&[u8]>) {
    let x = x.unwrap_or_default();
    // Every value passed here is at most 193 bytes (a path), 65 (a key) or a name.
    m.push(u8::try_from(x.len()).unwrap_or(u8::MAX));
    m.extend_from_slice(x);
}

/// Session proof (§2):
/// `"kms/import-session/v1" ‖ 0x00 ‖ session_id[16] ‖ session_public_key[65]
///  ‖ u64be(expires_at) ‖ SHA-256(client_nonce)[32]` (absent nonce hashes as empty).
pub fn session_proof(
    session_id: &Id,
    session_public_key: &P256PublicKey,
    expires_at: u64,
    client_nonce: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = start(labels::IMPORT_SESSION, 16 + 65 + 8 + 32);
    m.extend_from_slice(session_id.as_bytes());
    m.extend_from_slice(session_public_key.as_bytes());
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(&sha256(client_nonce.unwrap_or_default()));
    m
}

/// Import receipt (§3):
/// `"kms/import-receipt/v1" ‖ 0x00 ‖ session_id[16] ‖ wallet_id[16]
///  ‖ SHA-256(encrypted_key)[32] ‖ u8(len(key_type)) ‖ key_type
///  ‖ u8(len(public_key)) ‖ public_key ‖ u8(len(owner_public_key)) ‖ owner_public_key`.
pub fn import_receipt(
    session_id: &Id,
    wallet_id: &Id,
    encrypted_key: &[u8],
    key_type: KeyType,
    public_key: Option<&[u8]>,
    owner_public_key: Option<&P256PublicKey>,
) -> Vec<u8> {
    let mut m = start(labels::IMPORT_RECEIPT, 16 + 16 + 32 + 3 + 10 + 33 + 65);
    m.extend_from_slice(session_id.as_bytes());
    m.extend_from_slice(wallet_id.as_bytes());
    m.extend_from_slice(&sha256(encrypted_key));
    push_short(&mut m, Some(key_type.as_str().as_bytes()));
    push_short(&mut m, public_key);
    push_short(&mut m, owner_public_key.map(|k| &k.as_bytes()[..]));
    m
}

/// Export bundle (§4):
/// `"kms/export-bundle/v1" ‖ 0x00 ‖ wallet_id[16] ‖ recipient_public_key[65]
///  ‖ SHA-256(encrypted_key)[32]`.
pub fn export_bundle(wallet_id: &Id, recipient: &P256PublicKey, encrypted_key: &[u8]) -> Vec<u8> {
    let mut m = start(labels::EXPORT_BUNDLE, 16 + 65 + 32);
    m.extend_from_slice(wallet_id.as_bytes());
    m.extend_from_slice(recipient.as_bytes());
    m.extend_from_slice(&sha256(encrypted_key));
    m
}

/// Data-key response (`docs/data-keys.md`):
/// `"kms/data-key-response/v1" ‖ 0x00 ‖ data_key_id[16] ‖ u32be(master_key_version)
///  ‖ SHA-256(wrapped_key)[32] ‖ recipient_public_key[65] ‖ SHA-256(encrypted_key)[32]
///  ‖ SHA-256(canonical(encryption_context))[32]`.
pub fn data_key_response(
    data_key_id: &Id,
    master_key_version: u32,
    wrapped_key: &[u8],
    recipient: &P256PublicKey,
    encrypted_key: &[u8],
    context: &[u8],
) -> Vec<u8> {
    let mut m = start(labels::DATA_KEY_RESPONSE, 16 + 4 + 32 + 65 + 32 + 32);
    m.extend_from_slice(data_key_id.as_bytes());
    m.extend_from_slice(&master_key_version.to_be_bytes());
    m.extend_from_slice(&sha256(wrapped_key));
    m.extend_from_slice(recipient.as_bytes());
    m.extend_from_slice(&sha256(encrypted_key));
    m.extend_from_slice(&sha256(context));
    m
}

/// Owner's export authorization (§6):
/// `"kms/export-request/v1" ‖ 0x00 ‖ wallet_id[16] ‖ recipient_public_key[65]
///  ‖ u64be(expires_at) ‖ SHA-256(nonce)[32]`.
pub fn export_request(
    wallet_id: &Id,
    recipient: &P256PublicKey,
    expires_at: u64,
    nonce: &[u8],
) -> Vec<u8> {
    let mut m = start(labels::EXPORT_REQUEST, 16 + 65 + 8 + 32);
    m.extend_from_slice(wallet_id.as_bytes());
    m.extend_from_slice(recipient.as_bytes());
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(&sha256(nonce));
    m
}

/// Generate receipt (§7):
/// `"kms/generate-receipt/v1" ‖ 0x00 ‖ wallet_id[16] ‖ u8(len(key_type)) ‖ key_type
///  ‖ u8(len(public_key)) ‖ public_key ‖ u8(len(owner_public_key)) ‖ owner_public_key
///  ‖ SHA-256(client_nonce)[32]` (absent keys length 0, absent nonce hashes as empty).
pub fn generate_receipt(
    wallet_id: &Id,
    key_type: KeyType,
    public_key: Option<&[u8]>,
    owner_public_key: Option<&P256PublicKey>,
    client_nonce: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = start(labels::GENERATE_RECEIPT, 16 + 10 + 34 + 66 + 32);
    m.extend_from_slice(wallet_id.as_bytes());
    push_short(&mut m, Some(key_type.as_str().as_bytes()));
    push_short(&mut m, public_key);
    push_short(&mut m, owner_public_key.map(|k| &k.as_bytes()[..]));
    m.extend_from_slice(&sha256(client_nonce.unwrap_or_default()));
    m
}

/// Derived key (§8):
/// `"kms/derived-key/v1" ‖ 0x00 ‖ wallet_id[16] ‖ u8(len(curve)) ‖ curve
///  ‖ u8(len(path)) ‖ path ‖ u8(len(public_key)) ‖ public_key ‖ chain_code[32]`.
pub fn derived_key(
    wallet_id: &Id,
    curve: Curve,
    path: &DerivationPath,
    public_key: &[u8],
    chain_code: &[u8; 32],
) -> Vec<u8> {
    let path = path.to_string();
    let mut m = start(labels::DERIVED_KEY, 16 + 10 + 1 + path.len() + 34 + 32);
    m.extend_from_slice(wallet_id.as_bytes());
    push_short(&mut m, Some(curve.as_str().as_bytes()));
    push_short(&mut m, Some(path.as_bytes()));
    push_short(&mut m, Some(public_key));
    m.extend_from_slice(chain_code);
    m
}

/// Sign request, what an owner signs (§9):
/// `"kms/sign-request/v1" ‖ 0x00 ‖ wallet_id[16] ‖ u8(len(algorithm)) ‖ algorithm
///  ‖ u8(len(path)) ‖ path ‖ SHA-256(payload)[32] ‖ u8(len(merkle_root)) ‖ merkle_root
///  ‖ u64be(expires_at) ‖ SHA-256(nonce)[32]` (absent path or root: length 0).
pub fn sign_request(
    wallet_id: &Id,
    algorithm: Algorithm,
    path: Option<&DerivationPath>,
    payload: &[u8],
    merkle_root: Option<&[u8; 32]>,
    expires_at: u64,
    nonce: &[u8],
) -> Vec<u8> {
    let path = path.map(|p| p.to_string());
    let mut m = start(labels::SIGN_REQUEST, 16 + 26 + 194 + 32 + 33 + 8 + 32);
    m.extend_from_slice(wallet_id.as_bytes());
    push_short(&mut m, Some(algorithm.as_str().as_bytes()));
    push_short(&mut m, path.as_deref().map(str::as_bytes));
    m.extend_from_slice(&sha256(payload));
    push_short(&mut m, merkle_root.map(|r| &r[..]));
    m.extend_from_slice(&expires_at.to_be_bytes());
    m.extend_from_slice(&sha256(nonce));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(b: u8) -> P256PublicKey {
        let mut k = [b; 65];
        k[0] = 4;
        P256PublicKey::from_bytes(&k).unwrap()
    }

    #[test]
    fn session_proof_layout() {
        let m = session_proof(&Id::from_bytes([1; 16]), &pk(2), 0x0102030405060708, None);
        assert_eq!(&m[..22], b"kms/import-session/v1\0");
        assert_eq!(&m[22..38], &[1; 16]);
        assert_eq!(&m[38..103], pk(2).as_bytes());
        assert_eq!(&m[103..111], &[1, 2, 3, 4, 5, 6, 7, 8]);
        // SHA-256 of the empty string.
        assert_eq!(
            crate::hex(&m[111..]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(m.len(), 22 + 16 + 65 + 8 + 32);
    }

    #[test]
    fn receipt_layout_with_absent_keys() {
        let m = import_receipt(
            &Id::from_bytes([1; 16]),
            &Id::from_bytes([2; 16]),
            b"ct",
            KeyType::Raw,
            None,
            None,
        );
        let tail = &m[22 + 16 + 16 + 32..];
        assert_eq!(&m[..22], b"kms/import-receipt/v1\0");
        assert_eq!(tail, b"\x03raw\x00\x00");
        let m = import_receipt(
            &Id::from_bytes([1; 16]),
            &Id::from_bytes([2; 16]),
            b"ct",
            KeyType::P256,
            Some(&[7; 33]),
            Some(&pk(9)),
        );
        let tail = &m[22 + 16 + 16 + 32..];
        assert_eq!(&tail[..5], b"\x04p256");
        assert_eq!(tail[5], 33);
        assert_eq!(tail[39], 65);
        assert_eq!(tail.len(), 5 + 34 + 66);
    }

    #[test]
    fn export_layouts() {
        let m = export_bundle(&Id::from_bytes([1; 16]), &pk(2), b"x");
        assert_eq!(&m[..21], b"kms/export-bundle/v1\0");
        assert_eq!(m.len(), 21 + 16 + 65 + 32);
        let m = export_request(&Id::from_bytes([1; 16]), &pk(2), 5, b"n");
        assert_eq!(&m[..22], b"kms/export-request/v1\0");
        assert_eq!(&m[22 + 16 + 65..22 + 16 + 65 + 8], &5u64.to_be_bytes());
    }
}
