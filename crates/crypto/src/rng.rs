//! Randomness. Production code draws from the OS CSPRNG through aws-lc-rs;
//! tests pass their own [`RandomSource`] to the `_with_rng` twins.

use crate::CryptoError;

/// A source of random bytes.
pub trait RandomSource {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// The system CSPRNG (aws-lc-rs `SystemRandom`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl RandomSource for SystemRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        aws_lc_rs::rand::fill(dest).map_err(|_| CryptoError::Backend("system randomness"))
    }
}

/// `N` random bytes.
pub fn array<const N: usize>(rng: &mut impl RandomSource) -> Result<[u8; N], CryptoError> {
    let mut out = [0u8; N];
    rng.fill(&mut out)?;
    Ok(out)
}
