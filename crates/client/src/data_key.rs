//! Data keys (`docs/data-keys.md`): AES-256 keys generated in the secure
//! environment for the caller's own envelope encryption. The caller keeps
//! `wrapped_key` next to its ciphertext and asks for it to be decrypted
//! (sealed to a recipient key again) when it needs the key back.
//!
//! Every answer is verified against the pinned identity key before it is
//! returned: the signature binds the data key id, the master-key version,
//! the wrapped key, the recipient, the sealed key and the encryption
//! context, so a relay can neither swap one of them nor bind another
//! context than the one asked for.

use kms_crypto::{hpke, labels, messages, sign};
use kms_protocol::data_key::{DecryptDataKey, GenerateDataKey, WRAPPED_DATA_KEY_LEN};
use kms_protocol::{Bytes, P256PublicKey};

pub use kms_protocol::data_key::{DataKey, EncryptionContext};

use crate::{ClientError, HpkeSecretKey, KmsClient, SecretKey};

/// Format byte of the wrapped data keys this SDK knows (`docs/data-keys.md`,
/// "Wrapped key").
const WRAPPED_FORMAT: u8 = 1;

/// An encryption context from string pairs, checked as the service checks
/// it: at most 16 pairs, keys 1 to 128 bytes, values at most 256, no key
/// twice. Order does not matter.
pub fn encryption_context<K, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Result<EncryptionContext, ClientError>
where
    K: Into<String>,
    V: Into<String>,
{
    EncryptionContext::new(pairs.into_iter().map(|(k, v)| (k.into(), v.into())))
        .map_err(ClientError::InvalidContext)
}

impl KmsClient {
    /// `POST /v1/data-keys`: a fresh 32-byte data key, wrapped under the
    /// current master key and bound to `context`, sealed to `recipient`.
    /// The answer is verified (see [`KmsClient::verify_data_key`]); open it
    /// with [`KmsClient::open_data_key`] and keep `wrapped_key`.
    pub async fn generate_data_key(
        &self,
        context: &EncryptionContext,
        recipient: &P256PublicKey,
    ) -> Result<DataKey, ClientError> {
        let body = GenerateDataKey {
            encryption_context: context.clone(),
            recipient_public_key: *recipient,
        };
        let data_key: DataKey = self.post("/v1/data-keys", &body).await?;
        self.verify_data_key(&data_key, context, recipient, None)?;
        Ok(data_key)
    }

    /// `POST /v1/data-keys/decrypt`: the data key inside `wrapped_key`
    /// (which opens only with the `context` it was generated with) sealed
    /// to `recipient`, which need not be the key it was first sealed to.
    /// The answer is verified, including that it is about this `wrapped_key`.
    pub async fn decrypt_data_key(
        &self,
        wrapped_key: &[u8],
        context: &EncryptionContext,
        recipient: &P256PublicKey,
    ) -> Result<DataKey, ClientError> {
        let body = DecryptDataKey {
            wrapped_key: Bytes(wrapped_key.to_vec()),
            encryption_context: context.clone(),
            recipient_public_key: *recipient,
        };
        let data_key: DataKey = self.post("/v1/data-keys/decrypt", &body).await?;
        self.verify_data_key(&data_key, context, recipient, Some(wrapped_key))?;
        Ok(data_key)
    }

    /// Checks a data-key answer against the request it answers: sealed to
    /// `recipient`, about `wrapped_key` when one was sent, a wrapped key
    /// whose header names the same id and master-key version, and the
    /// identity key's signature over all of it and `context`
    /// (`docs/data-keys.md`, "Signed message").
    pub fn verify_data_key(
        &self,
        data_key: &DataKey,
        context: &EncryptionContext,
        recipient: &P256PublicKey,
        wrapped_key: Option<&[u8]>,
    ) -> Result<(), ClientError> {
        if data_key.recipient_public_key != *recipient {
            return Err(ClientError::Verification(
                "data key is sealed to another recipient",
            ));
        }
        let wrapped = data_key.wrapped_key.as_bytes();
        if wrapped_key.is_some_and(|w| w != wrapped) {
            return Err(ClientError::Verification(
                "data key answers for another wrapped key",
            ));
        }
        check_wrapped_header(wrapped, data_key)?;
        let msg = messages::data_key_response(
            &data_key.data_key_id,
            data_key.master_key_version,
            wrapped,
            recipient,
            data_key.encrypted_key.as_bytes(),
            &context.canonical_bytes(),
        );
        sign::verify(&self.identity, &msg, &data_key.signature)
            .map_err(|_| ClientError::Verification("data key signature does not verify"))
    }

    /// Verifies `data_key` (as [`KmsClient::verify_data_key`], for the
    /// recipient's own public key and `context`) and opens the 32-byte key
    /// sealed to `recipient`. Use it, then drop it (it is wiped on drop).
    pub fn open_data_key(
        &self,
        data_key: &DataKey,
        context: &EncryptionContext,
        recipient: &HpkeSecretKey,
    ) -> Result<SecretKey, ClientError> {
        self.verify_data_key(data_key, context, recipient.public_key(), None)?;
        let plaintext = recipient
            .open(
                &hpke::info(labels::DATA_KEY_SEAL, &data_key.data_key_id),
                &data_key.encrypted_key,
            )
            .map_err(|_| ClientError::DecryptionFailed)?;
        SecretKey::from_slice(plaintext.expose())
            .ok_or_else(|| ClientError::InvalidResponse("data key is not 32 bytes".to_owned()))
    }
}

/// `u8(1) ‖ u32be(master_key_version) ‖ data_key_id[16] ‖ nonce[12] ‖ ct[32] ‖ tag[16]`:
/// the header must name what the answer says.
fn check_wrapped_header(wrapped: &[u8], data_key: &DataKey) -> Result<(), ClientError> {
    let shape = |m: &str| ClientError::InvalidResponse(format!("wrapped_key: {m}"));
    if wrapped.len() != WRAPPED_DATA_KEY_LEN || wrapped[0] != WRAPPED_FORMAT {
        return Err(shape("not a format-1 wrapped data key"));
    }
    if wrapped[1..5] != data_key.master_key_version.to_be_bytes()
        || wrapped[5..21] != data_key.data_key_id.as_bytes()[..]
    {
        return Err(ClientError::Verification(
            "wrapped key names another data key id or master key version",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use kms_crypto::sign::SigningKey;
    use kms_protocol::{HpkeCiphertext, Id};

    use super::*;

    /// What the secure environment would answer, signed by `identity`.
    fn issue(
        identity: &SigningKey,
        version: u32,
        id: Id,
        context: &EncryptionContext,
        recipient: &P256PublicKey,
        key: &[u8],
    ) -> DataKey {
        let mut wrapped = vec![WRAPPED_FORMAT];
        wrapped.extend_from_slice(&version.to_be_bytes());
        wrapped.extend_from_slice(id.as_bytes());
        wrapped.extend_from_slice(&[0xa5; 12 + 32 + 16]);
        let encrypted_key =
            hpke::seal(recipient, &hpke::info(labels::DATA_KEY_SEAL, &id), key).unwrap();
        sign_data_key(
            identity,
            DataKey {
                data_key_id: id,
                master_key_version: version,
                wrapped_key: Bytes(wrapped),
                recipient_public_key: *recipient,
                encrypted_key,
                signature: kms_protocol::Signature::from_bytes(&[1; 64]).unwrap(),
            },
            context,
        )
    }

    fn sign_data_key(
        identity: &SigningKey,
        mut dk: DataKey,
        context: &EncryptionContext,
    ) -> DataKey {
        let msg = messages::data_key_response(
            &dk.data_key_id,
            dk.master_key_version,
            dk.wrapped_key.as_bytes(),
            &dk.recipient_public_key,
            dk.encrypted_key.as_bytes(),
            &context.canonical_bytes(),
        );
        dk.signature = identity.sign(&msg).unwrap();
        dk
    }

    fn client(identity: &SigningKey, base: &str) -> KmsClient {
        KmsClient::new(base, *identity.public_key()).unwrap()
    }

    fn ctx() -> EncryptionContext {
        encryption_context([("tenant", "acme"), ("purpose", "backups")]).unwrap()
    }

    fn is_verification(r: Result<impl std::fmt::Debug, ClientError>) -> bool {
        matches!(r, Err(ClientError::Verification(_)))
    }

    #[test]
    fn context_helper_checks_the_limits() {
        let a = encryption_context([("b", "2"), ("a", "1")]).unwrap();
        let b = encryption_context([("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert!(encryption_context(Vec::<(String, String)>::new()).is_ok());
        for bad in [
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("a".to_owned(), "2".to_owned()),
            ],
            vec![(String::new(), "1".to_owned())],
            vec![("k".repeat(129), String::new())],
            vec![("k".to_owned(), "v".repeat(257))],
            (0..17).map(|i| (format!("k{i}"), String::new())).collect(),
        ] {
            assert!(
                matches!(encryption_context(bad), Err(ClientError::InvalidContext(_))),
                "a bad context was accepted"
            );
        }
        assert!(encryption_context([("k".repeat(128), "v".repeat(256))]).is_ok());
    }

    #[test]
    fn a_verified_data_key_opens_and_every_tampered_twin_fails() {
        let identity = SigningKey::generate().unwrap();
        let kms = client(&identity, "http://127.0.0.1:9");
        let recipient = HpkeSecretKey::generate().unwrap();
        let key = [0x42u8; 32];
        let id = Id::from_bytes([7; 16]);
        let dk = issue(&identity, 3, id, &ctx(), recipient.public_key(), &key);

        kms.verify_data_key(&dk, &ctx(), recipient.public_key(), None)
            .unwrap();
        kms.verify_data_key(
            &dk,
            &ctx(),
            recipient.public_key(),
            Some(dk.wrapped_key.as_bytes()),
        )
        .unwrap();
        let opened = kms.open_data_key(&dk, &ctx(), &recipient).unwrap();
        assert_eq!(opened.expose(), &key);
        // The same pairs given in another order are the same context.
        let reordered = encryption_context([("purpose", "backups"), ("tenant", "acme")]).unwrap();
        assert!(kms.open_data_key(&dk, &reordered, &recipient).is_ok());

        // Another context, another recipient, another wrapped key asked for.
        let other_ctx = encryption_context([("tenant", "acme")]).unwrap();
        assert!(is_verification(
            kms.open_data_key(&dk, &other_ctx, &recipient)
        ));
        let other = HpkeSecretKey::generate().unwrap();
        assert!(is_verification(kms.open_data_key(&dk, &ctx(), &other)));
        assert!(is_verification(kms.verify_data_key(
            &dk,
            &ctx(),
            recipient.public_key(),
            Some(&[1; WRAPPED_DATA_KEY_LEN])
        )));
        // Signed by another identity key.
        let impostor = issue(
            &SigningKey::generate().unwrap(),
            3,
            id,
            &ctx(),
            recipient.public_key(),
            &key,
        );
        assert!(is_verification(kms.open_data_key(
            &impostor,
            &ctx(),
            &recipient
        )));
        // Each signed field changed after signing.
        let mut t = dk.clone();
        t.master_key_version = 4;
        t.wrapped_key.0[4] = 4;
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
        let mut t = dk.clone();
        t.wrapped_key.0[30] ^= 1;
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
        let mut t = dk.clone();
        let mut ct = t.encrypted_key.as_bytes().to_vec();
        ct[70] ^= 1;
        t.encrypted_key = HpkeCiphertext::from_bytes(ct).unwrap();
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
        let mut t = dk.clone();
        t.data_key_id = Id::from_bytes([8; 16]);
        t.wrapped_key.0[5..21].copy_from_slice(&[8; 16]);
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
    }

    #[test]
    fn a_signed_answer_that_disagrees_with_itself_is_refused() {
        let identity = SigningKey::generate().unwrap();
        let kms = client(&identity, "http://127.0.0.1:9");
        let recipient = HpkeSecretKey::generate().unwrap();
        let dk = issue(
            &identity,
            1,
            Id::from_bytes([7; 16]),
            &ctx(),
            recipient.public_key(),
            &[1; 32],
        );

        // The header names another version or id than the signed fields.
        let mut t = dk.clone();
        t.master_key_version = 2;
        let t = sign_data_key(&identity, t, &ctx());
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
        let mut t = dk.clone();
        t.data_key_id = Id::from_bytes([9; 16]);
        let t = sign_data_key(&identity, t, &ctx());
        assert!(is_verification(kms.open_data_key(&t, &ctx(), &recipient)));
        // A wrapped key of another shape or format.
        for wrapped in [
            dk.wrapped_key.0[..WRAPPED_DATA_KEY_LEN - 1].to_vec(),
            [dk.wrapped_key.as_bytes(), &[0]].concat(),
            [&[2], &dk.wrapped_key.as_bytes()[1..]].concat(),
        ] {
            let mut t = dk.clone();
            t.wrapped_key = Bytes(wrapped);
            let t = sign_data_key(&identity, t, &ctx());
            assert!(matches!(
                kms.open_data_key(&t, &ctx(), &recipient),
                Err(ClientError::InvalidResponse(_))
            ));
        }
        // Sealed under another HPKE info (another id), or not 32 bytes.
        let mut t = dk.clone();
        t.encrypted_key = hpke::seal(
            recipient.public_key(),
            &hpke::info(labels::EXPORT, &dk.data_key_id),
            &[1; 32],
        )
        .unwrap();
        let t = sign_data_key(&identity, t, &ctx());
        assert!(matches!(
            kms.open_data_key(&t, &ctx(), &recipient),
            Err(ClientError::DecryptionFailed)
        ));
        let short = issue(
            &identity,
            1,
            dk.data_key_id,
            &ctx(),
            recipient.public_key(),
            &[1; 31],
        );
        assert!(matches!(
            kms.open_data_key(&short, &ctx(), &recipient),
            Err(ClientError::InvalidResponse(_))
        ));
    }

    /// A one-shot HTTP server answering `status` with `body`; returns its
    /// URL and the request body it received.
    fn answer_once(
        status: u16,
        body: String,
    ) -> (String, std::thread::JoinHandle<serde_json::Value>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut request = vec![0; length];
            reader.read_exact(&mut request).unwrap();
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            serde_json::from_slice(&request).unwrap()
        });
        (url, handle)
    }

    #[tokio::test]
    async fn generate_and_decrypt_send_the_request_and_verify_the_answer() {
        let identity = SigningKey::generate().unwrap();
        let recipient = HpkeSecretKey::generate().unwrap();
        let dk = issue(
            &identity,
            2,
            Id::from_bytes([5; 16]),
            &ctx(),
            recipient.public_key(),
            &[9; 32],
        );

        let (url, seen) = answer_once(200, serde_json::to_string(&dk).unwrap());
        let got = client(&identity, &url)
            .generate_data_key(&ctx(), recipient.public_key())
            .await
            .unwrap();
        assert_eq!(got, dk);
        let sent = seen.join().unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "encryption_context": {"purpose": "backups", "tenant": "acme"},
                "recipient_public_key": kms_protocol::b64::encode(recipient.public_key().as_bytes()),
            })
        );

        let (url, seen) = answer_once(200, serde_json::to_string(&dk).unwrap());
        let got = client(&identity, &url)
            .decrypt_data_key(dk.wrapped_key.as_bytes(), &ctx(), recipient.public_key())
            .await
            .unwrap();
        assert_eq!(got, dk);
        let sent = seen.join().unwrap();
        assert_eq!(
            sent["wrapped_key"],
            kms_protocol::b64::encode(dk.wrapped_key.as_bytes())
        );

        // A relay answering with a genuine data key for another request.
        let (url, seen) = answer_once(200, serde_json::to_string(&dk).unwrap());
        let other = HpkeSecretKey::generate().unwrap();
        let r = client(&identity, &url)
            .generate_data_key(&ctx(), other.public_key())
            .await;
        assert!(is_verification(r));
        seen.join().unwrap();
        let (url, seen) = answer_once(200, serde_json::to_string(&dk).unwrap());
        let mut wrapped = dk.wrapped_key.0.clone();
        wrapped[40] ^= 1;
        let r = client(&identity, &url)
            .decrypt_data_key(&wrapped, &ctx(), recipient.public_key())
            .await;
        assert!(is_verification(r));
        seen.join().unwrap();
        let (url, seen) = answer_once(200, serde_json::to_string(&dk).unwrap());
        let r = client(&identity, &url)
            .generate_data_key(&EncryptionContext::default(), recipient.public_key())
            .await;
        assert!(is_verification(r));
        seen.join().unwrap();

        // docs/protocol.md's error JSON becomes `Api`.
        let (url, seen) = answer_once(
            422,
            r#"{"error":{"code":"decryption_failed","message":"nope"}}"#.to_owned(),
        );
        let r = client(&identity, &url)
            .decrypt_data_key(dk.wrapped_key.as_bytes(), &ctx(), recipient.public_key())
            .await;
        assert!(
            matches!(
                r,
                Err(ClientError::Api {
                    status: 422,
                    code: kms_protocol::ErrorCode::DecryptionFailed,
                    ..
                })
            ),
            "{r:?}"
        );
        seen.join().unwrap();
    }
}
