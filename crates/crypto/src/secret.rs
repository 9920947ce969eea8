//! Secret types: private field, redacted `Debug`, zeroized on drop, no
//! `Serialize`, equality only in constant time.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte symmetric key or private scalar.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub const LEN: usize = 32;

    /// Wraps key bytes; the caller's copy should be the one it just created.
    pub fn from_array(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Copies key bytes out of a slice of exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut k = Self([0; 32]);
        if bytes.len() != 32 {
            return None;
        }
        k.0.copy_from_slice(bytes);
        Some(k)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Writable access, so a key can be generated or derived in place.
    pub fn expose_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// A secret byte string of any length (key material, plaintexts).
#[derive(Zeroize, ZeroizeOnDrop, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Takes ownership of a buffer that holds a secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// An empty buffer that will not reallocate below `capacity`, so no
    /// stray copy of its contents is left behind while it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    /// Appends within the reserved capacity; grows (leaving no copy: the old
    /// buffer is wiped first) only if the estimate was short.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if self.0.len() + bytes.len() > self.0.capacity() {
            let mut bigger = Vec::with_capacity((self.0.len() + bytes.len()) * 2);
            bigger.extend_from_slice(&self.0);
            self.0.zeroize();
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_mut_vec(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::from_array([0x41; 32]);
        let b = SecretBytes::new(b"hunter2hunter2".to_vec());
        assert_eq!(format!("{k:?}"), "SecretKey([REDACTED])");
        assert!(!format!("{b:?}").contains("hunter2"));
    }

    #[test]
    fn equality_is_by_value() {
        assert!(SecretKey::from_array([1; 32]).ct_eq(&SecretKey::from_array([1; 32])));
        assert!(!SecretKey::from_array([1; 32]).ct_eq(&SecretKey::from_array([2; 32])));
        assert!(!SecretBytes::new(vec![1]).ct_eq(&SecretBytes::new(vec![1, 1])));
    }

    #[test]
    fn extend_grows_past_capacity() {
        let mut b = SecretBytes::with_capacity(2);
        b.extend_from_slice(b"ab");
        b.extend_from_slice(b"cdef");
        assert_eq!(b.expose(), b"abcdef");
    }
}
