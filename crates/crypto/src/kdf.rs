//! HKDF-SHA256 (RFC 5869), one labelled derivation per purpose.

use aws_lc_rs::hkdf;

use crate::{CryptoError, SecretKey};

/// Derives a 32-byte key from `ikm` for the purpose named by `label`
/// (a constant from [`crate::labels`]); empty salt, label as `info`.
pub fn derive_key(ikm: &SecretKey, label: &[u8]) -> Result<SecretKey, CryptoError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(ikm.expose());
    let info = [label];
    let okm = prk
        .expand(&info, hkdf::HKDF_SHA256)
        .map_err(|_| CryptoError::Backend("hkdf expand"))?;
    let mut out = SecretKey::from_array([0; 32]);
    okm.fill(out.expose_mut())
        .map_err(|_| CryptoError::Backend("hkdf fill"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_separate_keys() {
        let ikm = SecretKey::from_array([7; 32]);
        let a = derive_key(&ikm, b"kms/a/v1").unwrap();
        let b = derive_key(&ikm, b"kms/b/v1").unwrap();
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&derive_key(&ikm, b"kms/a/v1").unwrap()));
    }

    /// RFC 5869 test case 3 (SHA-256, empty salt and info), first 32 bytes.
    #[test]
    fn rfc5869_case_3() {
        let ikm = [0x0bu8; 22];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&ikm);
        let mut out = [0u8; 42];
        prk.expand(&[], MyLen(42)).unwrap().fill(&mut out).unwrap();
        assert_eq!(
            crate::hex(&out),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
    }

    struct MyLen(usize);
    impl hkdf::KeyType for MyLen {
        fn len(&self) -> usize {
            self.0
        }
    }
}
