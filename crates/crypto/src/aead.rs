//! AES-256-GCM with a random 96-bit nonce (NIST SP 800-38D), output
//! `nonce ‖ ciphertext ‖ tag`.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::rng::{RandomSource, SystemRng};
use crate::{CryptoError, OpenError, SecretBytes, SecretKey};

pub const NONCE_BYTES: usize = NONCE_LEN;
pub const TAG_BYTES: usize = 16;

fn key(k: &SecretKey) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, k.expose())
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Backend("aes-256-gcm key"))
}

/// Encrypts `plaintext` under `k` with `aad`, appending `nonce ‖ ct ‖ tag` to `out`.
pub fn encrypt_with_rng(
    k: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
    rng: &mut impl RandomSource,
) -> Result<(), CryptoError> {
    let nonce_bytes = crate::rng::array::<NONCE_LEN>(rng)?;
    let start = out.len();
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(plaintext);
    let tag = key(k)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(aad),
            &mut out[start + NONCE_LEN..],
        )
        .map_err(|_| CryptoError::Backend("aes-256-gcm seal"))?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// [`encrypt_with_rng`] with the system CSPRNG.
pub fn encrypt(
    k: &SecretKey,
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    encrypt_with_rng(k, aad, plaintext, out, &mut SystemRng)
}

/// Opens `nonce ‖ ct ‖ tag` under `k` with `aad`.
pub fn decrypt(k: &SecretKey, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, OpenError> {
    if sealed.len() < NONCE_LEN + TAG_BYTES {
        return Err(OpenError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
    let k = key(k).map_err(|_| OpenError)?;
    let mut buf = SecretBytes::new(ct.to_vec());
    let len = k
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_vec())
        .map_err(|_| OpenError)?
        .len();
    buf.as_mut_vec().truncate(len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let k = SecretKey::from_array([9; 32]);
        let mut sealed = Vec::new();
        encrypt(&k, b"aad", b"secret", &mut sealed).unwrap();
        assert_eq!(sealed.len(), 12 + 6 + 16);
        assert_eq!(decrypt(&k, b"aad", &sealed).unwrap().expose(), b"secret");
        assert_eq!(decrypt(&k, b"aaD", &sealed).unwrap_err(), OpenError);
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(decrypt(&k, b"aad", &bad).is_err(), "byte {i}");
        }
        assert!(decrypt(&k, b"aad", &sealed[..27]).is_err());
        assert!(decrypt(&SecretKey::from_array([8; 32]), b"aad", &sealed).is_err());
    }
}
