//! Generate, derive and sign (docs/protocol.md §§7–9), each answer checked
//! before it is returned: receipts and derived keys against the pinned
//! identity key, signatures against the key that signed and, when the
//! caller names one, against the key it already trusts.

use kms_crypto::{ed25519, messages, p256, rng, secp256k1, sign};
use kms_protocol::api::{
    Algorithm, Authorization, DeriveKey, DerivedKey, GenerateReceipt, GenerateWallet, SignRequest,
    SignResponse,
};
use kms_protocol::{Bytes, Bytes32, Curve, DerivationPath, Id, KeyType, Nonce, P256PublicKey};

use crate::{now, ClientError, KmsClient, SigningKey, MAX_AUTHORIZATION_SECONDS};

/// What to sign: the body of `POST /v1/wallets/{id}/sign` less the
/// authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToSign {
    pub algorithm: Algorithm,
    /// The key at this path (HD wallets); `None` for single-key wallets.
    pub path: Option<DerivationPath>,
    pub payload: Vec<u8>,
    /// BIP-341 script tree root (taproot only).
    pub merkle_root: Option<[u8; 32]>,
}

impl ToSign {
    /// The request with `merkle_root` only where §9 reads it.
    fn request(&self, authorization: Option<Authorization>) -> SignRequest {
        SignRequest {
            algorithm: self.algorithm,
            path: self.path,
            payload: Bytes(self.payload.clone()),
            merkle_root: self.merkle_root_read().map(Bytes32::from_array),
            authorization,
        }
    }

    fn merkle_root_read(&self) -> Option<[u8; 32]> {
        match self.algorithm {
            Algorithm::SchnorrSecp256k1Taproot => self.merkle_root,
            _ => None,
        }
    }
}

/// The owner's signature allowing `wallet_id` to sign `what` until
/// `expires_at` (docs/protocol.md §9), with a fresh 32-byte nonce.
pub fn authorize_sign(
    owner: &SigningKey,
    wallet_id: &Id,
    what: &ToSign,
    expires_at: u64,
) -> Result<Authorization, ClientError> {
    let nonce = Nonce::from_bytes(&rng::array::<32>(&mut rng::SystemRng)?)
        .map_err(|_| ClientError::Verification("nonce"))?;
    let msg = messages::sign_request(
        wallet_id,
        what.algorithm,
        what.path.as_ref(),
        &what.payload,
        what.merkle_root_read().as_ref(),
        expires_at,
        nonce.as_bytes(),
    );
    Ok(Authorization {
        expires_at,
        nonce,
        signature: owner.sign(&msg)?,
    })
}

/// [`authorize_sign`] valid for the next `seconds` (at most 300).
pub fn authorize_sign_for(
    owner: &SigningKey,
    wallet_id: &Id,
    what: &ToSign,
    seconds: u64,
) -> Result<Authorization, ClientError> {
    authorize_sign(
        owner,
        wallet_id,
        what,
        now() + seconds.min(MAX_AUTHORIZATION_SECONDS),
    )
}

/// Checks `signature` over `payload` by `public_key` as `algorithm` makes it
/// (§9's table): ECDSA over the 32-byte digest (secp256k1: low S only),
/// BIP-340 under the x-only key, Ed25519 over the message.
pub fn verify_signature(
    algorithm: Algorithm,
    public_key: &[u8],
    payload: &[u8],
    signature: &[u8; 64],
) -> Result<(), ClientError> {
    let bad = |_| ClientError::Verification("the signature does not verify");
    let digest = || -> Result<[u8; 32], ClientError> {
        payload
            .try_into()
            .map_err(|_| ClientError::Verification("payload length"))
    };
    match algorithm {
        Algorithm::EcdsaSecp256k1 => secp256k1::verify_ecdsa(public_key, &digest()?, signature),
        Algorithm::SchnorrSecp256k1 | Algorithm::SchnorrSecp256k1Taproot => {
            secp256k1::verify_schnorr(public_key, payload, signature)
        }
        Algorithm::Ed25519 => ed25519::verify(public_key, payload, signature),
        Algorithm::EcdsaP256 => p256::verify_digest(public_key, &digest()?, signature),
    }
    .map_err(bad)
}

/// The key a signature of `what` must answer, from the SEC1-compressed (or
/// ed25519) public key the caller trusts: the same key for ECDSA and
/// Ed25519, its x coordinate for BIP-340, the BIP-341 output key for taproot.
fn answered_key(what: &ToSign, trusted: &[u8]) -> Result<Vec<u8>, ClientError> {
    let not_secp = || ClientError::Verification("the trusted key is not a secp256k1 key");
    Ok(match what.algorithm {
        Algorithm::SchnorrSecp256k1 => {
            secp256k1::check_public_key(trusted).map_err(|_| not_secp())?;
            trusted[1..].to_vec()
        }
        Algorithm::SchnorrSecp256k1Taproot => {
            let k: [u8; 33] = trusted.try_into().map_err(|_| not_secp())?;
            secp256k1::taproot_output_key(&k, what.merkle_root_read().as_ref())
                .map_err(|_| not_secp())?
                .to_vec()
        }
        _ => trusted.to_vec(),
    })
}

impl KmsClient {
    /// `POST /v1/wallets`: a wallet made inside the secure environment;
    /// the receipt is checked against the pinned identity key and the
    /// fresh nonce this call sent.
    pub async fn generate(
        &self,
        key_type: KeyType,
        owner_public_key: Option<P256PublicKey>,
    ) -> Result<GenerateReceipt, ClientError> {
        let nonce = Nonce::from_bytes(&rng::array::<32>(&mut rng::SystemRng)?)
            .map_err(|_| ClientError::Verification("nonce"))?;
        let req = GenerateWallet {
            key_type,
            owner_public_key,
            client_nonce: Some(nonce.clone()),
        };
        let receipt: GenerateReceipt = self.post("/v1/wallets", &req).await?;
        if receipt.key_type != key_type || receipt.owner_public_key != owner_public_key {
            return Err(ClientError::Verification(
                "receipt does not describe the wallet asked for",
            ));
        }
        let want_len = match key_type {
            KeyType::Raw | KeyType::Bip39 => None,
            KeyType::Bip32 => Some(33),
            k => k.single_key_curve().map(Curve::public_key_len),
        };
        if receipt.public_key.as_ref().map(|p| p.as_bytes().len()) != want_len {
            return Err(ClientError::Verification(
                "receipt's public key has the wrong shape",
            ));
        }
        let msg = messages::generate_receipt(
            &receipt.wallet_id,
            receipt.key_type,
            receipt.public_key.as_ref().map(|p| p.as_bytes()),
            receipt.owner_public_key.as_ref(),
            Some(nonce.as_bytes()),
        );
        sign::verify(&self.identity, &msg, &receipt.signature)
            .map_err(|_| ClientError::Verification("generate receipt does not verify"))?;
        Ok(receipt)
    }

    /// `POST /v1/wallets/{id}/derive`: the public key and chain code at
    /// `path`, checked against the identity key, so an address made from it
    /// can be trusted though it came through the relay.
    pub async fn derive(
        &self,
        wallet_id: &Id,
        curve: Curve,
        path: &DerivationPath,
    ) -> Result<DerivedKey, ClientError> {
        let req = DeriveKey { curve, path: *path };
        let key: DerivedKey = self
            .post(&format!("/v1/wallets/{wallet_id}/derive"), &req)
            .await?;
        if key.wallet_id != *wallet_id || key.curve != curve || key.path != *path {
            return Err(ClientError::Verification(
                "derived key is for another request",
            ));
        }
        if key.public_key.as_bytes().len() != curve.public_key_len() {
            return Err(ClientError::Verification(
                "derived public key has the wrong length",
            ));
        }
        let msg = messages::derived_key(
            wallet_id,
            curve,
            path,
            key.public_key.as_bytes(),
            key.chain_code.as_bytes(),
        );
        sign::verify(&self.identity, &msg, &key.signature)
            .map_err(|_| ClientError::Verification("derived key does not verify"))?;
        Ok(key)
    }

    /// `POST /v1/wallets/{id}/sign`. The signature is checked under the
    /// key that answered it; with `trusted_key` (the SEC1-compressed or
    /// ed25519 key from a verified receipt or [`KmsClient::derive`]) that
    /// key must be the trusted one, so a relay cannot substitute its own.
    pub async fn sign(
        &self,
        wallet_id: &Id,
        what: &ToSign,
        trusted_key: Option<&[u8]>,
    ) -> Result<SignResponse, ClientError> {
        self.sign_authorized(wallet_id, what, None, trusted_key)
            .await
    }

    /// [`KmsClient::sign`] with the owner's authorization, which an
    /// owner-bound wallet needs (see [`authorize_sign`]).
    pub async fn sign_authorized(
        &self,
        wallet_id: &Id,
        what: &ToSign,
        authorization: Option<Authorization>,
        trusted_key: Option<&[u8]>,
    ) -> Result<SignResponse, ClientError> {
        let resp: SignResponse = self
            .post(
                &format!("/v1/wallets/{wallet_id}/sign"),
                &what.request(authorization),
            )
            .await?;
        if resp.wallet_id != *wallet_id
            || resp.algorithm != what.algorithm
            || resp.path != what.path
        {
            return Err(ClientError::Verification(
                "signature is for another request",
            ));
        }
        if let Some(trusted) = trusted_key {
            if resp.public_key.as_bytes() != answered_key(what, trusted)?.as_slice() {
                return Err(ClientError::Verification(
                    "the signing key is not the trusted key",
                ));
            }
        }
        verify_signature(
            what.algorithm,
            resp.public_key.as_bytes(),
            &what.payload,
            resp.signature.as_bytes(),
        )?;
        match (what.algorithm, resp.recovery_id) {
            (Algorithm::EcdsaSecp256k1, Some(id)) => {
                let digest: [u8; 32] = what
                    .payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| ClientError::Verification("payload length"))?;
                let recovered = secp256k1::recover_ecdsa(&digest, resp.signature.as_bytes(), id)
                    .map_err(|_| ClientError::Verification("recovery id does not recover"))?;
                if recovered[..] != *resp.public_key.as_bytes() {
                    return Err(ClientError::Verification(
                        "recovery id recovers another key",
                    ));
                }
            }
            (Algorithm::EcdsaSecp256k1, None) => {
                return Err(ClientError::Verification("recovery id missing"))
            }
            (_, Some(_)) => return Err(ClientError::Verification("unexpected recovery id")),
            (_, None) => {}
        }
        Ok(resp)
    }
}
