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

/// Argon2id cost parameters (RFC 9106), stored beside what they protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2Params {
    /// RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes),
    /// with one lane: the secure environment derives it once per start.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    /// Bounds accepted when reading stored parameters, so a tampered file
    /// cannot make a start cost hours or exhaust memory.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_ITERATIONS: u32 = 64;
    pub const MAX_PARALLELISM: u32 = 16;

    pub fn within_bounds(&self) -> bool {
        (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
            && (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && self.memory_kib >= 8 * self.parallelism
            && self.memory_kib <= Self::MAX_MEMORY_KIB
    }
}

/// Derives a 32-byte key from a passphrase with Argon2id (version 0x13).
pub fn argon2id(
    passphrase: &[u8],
    salt: &[u8],
    params: Argon2Params,
) -> Result<SecretKey, CryptoError> {
    if !params.within_bounds() {
        return Err(CryptoError::Unsupported("argon2 parameters out of bounds"));
    }
    let p = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|_| CryptoError::Unsupported("argon2 parameters"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = SecretKey::from_array([0; 32]);
    a.hash_password_into(passphrase, salt, out.expose_mut())
        .map_err(|_| CryptoError::Unsupported("argon2 input"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derivation is a function of passphrase and salt; stored
    /// parameters outside the bounds are refused before any work.
    #[test]
    fn argon2id_is_deterministic_and_bounded() {
        let p = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let a = argon2id(b"passphrase", b"saltsaltsaltsalt", p).unwrap();
        let b = argon2id(b"passphrase", b"saltsaltsaltsalt", p).unwrap();
        let c = argon2id(b"passphrasf", b"saltsaltsaltsalt", p).unwrap();
        assert!(a.ct_eq(&b) && !a.ct_eq(&c));
        let huge = Argon2Params {
            memory_kib: u32::MAX,
            ..p
        };
        assert!(argon2id(b"x", b"saltsaltsaltsalt", huge).is_err());
        assert!(Argon2Params::DEFAULT.within_bounds());
    }

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
