//! The `aws-kms` root-key provider: an AWS KMS symmetric key, used through
//! `Encrypt`/`Decrypt` with an encryption context naming the purpose and
//! this deployment, so a wrapped key from another deployment sharing the
//! KMS key does not open here (and CloudTrail names who asked).
//!
//! Wrapped key-set key layout:
//! ```text
//! u8(1) ‖ CiphertextBlob     (AWS's own format; it names the KMS key)
//!   Encrypt(KeyId, Plaintext = keyset_key,
//!           EncryptionContext = {"purpose": "kms/keyset-key/v1", "deployment": <deployment>})
//! ```
//!
//! The trait is synchronous and is called from plain threads as well as
//! from inside the server's tokio runtime, where `block_on` panics; so the
//! provider owns a current-thread runtime of its own and drives each SDK
//! call on a scoped thread of its own. Every call is bounded by
//! [`OPERATION_TIMEOUT`] (retries included).
//!
//! The key-set key crosses the SDK in a `Blob` that is not zeroized; the
//! plaintext `Decrypt` returns is moved into a zeroizing buffer at once and
//! never logged.

use std::future::Future;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;
use kms_crypto::{labels, SecretBytes, SecretKey};

use super::{AwsKmsSettings, RootKeyError, RootKeyProvider};

const NAME: &str = "aws-kms";
const VERSION: u8 = 1;
/// The bound on one SDK call, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The `aws-kms` provider.
pub struct AwsKmsProvider {
    /// `None` only while dropping.
    rt: Option<tokio::runtime::Runtime>,
    client: Client,
    key_id: String,
    deployment: String,
    region: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key_id", &self.key_id)
            .field("deployment", &self.deployment)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for AwsKmsProvider {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn unavailable(detail: impl Into<String>) -> RootKeyError {
    RootKeyError::Unavailable {
        provider: NAME,
        detail: detail.into(),
    }
}

/// The SDK's message, one line: `Code: message` for a service error, the
/// chain of causes for a transport one (`dispatch failure: io error: …`).
fn sdk_message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(se) = e.as_service_error() {
        return match (se.code(), se.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => se.to_string(),
        };
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.ends_with(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

fn purpose() -> String {
    String::from_utf8_lossy(labels::KEYSET_KEY_WRAP).into_owned()
}

/// Runs `fut` to completion on `rt`, from a scoped thread of its own, so
/// that the caller may be inside another runtime.
fn run<F>(rt: &tokio::runtime::Runtime, fut: F) -> Result<F::Output, RootKeyError>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("aws-kms".into())
            .spawn_scoped(s, || rt.block_on(fut))
            .map_err(|e| unavailable(format!("starting a thread for the AWS KMS call: {e}")))?
            .join()
            .map_err(|_| unavailable("the AWS KMS call panicked"))
    })
}

impl AwsKmsProvider {
    /// Builds the client (region from the settings, else the SDK's usual
    /// sources; the endpoint from the settings, else AWS's) and checks with
    /// `DescribeKey` that the key is reachable and enabled.
    pub fn new(s: &AwsKmsSettings) -> Result<Self, RootKeyError> {
        if s.key_id.is_empty() {
            return Err(RootKeyError::Config("the AWS KMS key id is empty".into()));
        }
        if s.deployment.is_empty() {
            return Err(RootKeyError::Config(
                "the deployment name (AWS KMS encryption context) is empty".into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unavailable(format!("starting the AWS SDK runtime: {e}")))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(OPERATION_TIMEOUT)
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
        if let Some(region) = &s.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &s.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let config = run(&rt, loader.load())?;
        let region = config
            .region()
            .map(|r| r.as_ref().to_owned())
            .ok_or_else(|| {
                RootKeyError::Config(
                    "no AWS region: give one in the settings or set AWS_REGION".into(),
                )
            })?;
        let client = Client::new(&config);
        let where_ = s.endpoint.as_deref().unwrap_or("AWS");
        let described = run(&rt, client.describe_key().key_id(&s.key_id).send())?.map_err(|e| {
            unavailable(format!(
                "DescribeKey {} in {region} at {where_}: {}",
                s.key_id,
                sdk_message(&e)
            ))
        })?;
        let meta = described
            .key_metadata()
            .ok_or_else(|| unavailable("DescribeKey returned no key metadata"))?;
        if !meta.enabled() {
            return Err(unavailable(format!(
                "the AWS KMS key {} is not enabled (state {:?})",
                s.key_id,
                meta.key_state()
            )));
        }
        tracing::info!(key = meta.arn().unwrap_or(&s.key_id), %region, endpoint = where_,
            deployment = %s.deployment, "connected to the AWS KMS root key");
        Ok(Self {
            rt: Some(rt),
            client,
            key_id: s.key_id.clone(),
            deployment: s.deployment.clone(),
            region,
            endpoint: s.endpoint.clone(),
        })
    }

    fn run<F>(&self, fut: F) -> Result<F::Output, RootKeyError>
    where
        F: Future + Send,
        F::Output: Send,
    {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| unavailable("the provider is shutting down"))?;
        run(rt, fut)
    }
}

impl RootKeyProvider for AwsKmsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, RootKeyError> {
        let request = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.expose().to_vec()))
            .encryption_context("purpose", purpose())
            .encryption_context("deployment", &self.deployment);
        let out = self.run(request.send())?.map_err(|e| {
            unavailable(format!("Encrypt with {}: {}", self.key_id, sdk_message(&e)))
        })?;
        let blob = out
            .ciphertext_blob()
            .ok_or_else(|| unavailable("Encrypt returned no ciphertext"))?;
        let mut wrapped = Vec::with_capacity(1 + blob.as_ref().len());
        wrapped.push(VERSION);
        wrapped.extend_from_slice(blob.as_ref());
        Ok(wrapped)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretKey, RootKeyError> {
        let blob = match wrapped.split_first() {
            Some((&VERSION, blob)) if !blob.is_empty() => blob,
            _ => return Err(RootKeyError::Malformed(NAME)),
        };
        let request = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .encryption_context("purpose", purpose())
            .encryption_context("deployment", &self.deployment);
        let mut out = self.run(request.send())?.map_err(|e| {
            let detail = format!("Decrypt with {}: {}", self.key_id, sdk_message(&e));
            match e.as_service_error() {
                Some(se)
                    if se.is_invalid_ciphertext_exception() || se.is_incorrect_key_exception() =>
                {
                    RootKeyError::Refused {
                        provider: NAME,
                        detail: format!(
                            "{detail} (another key or deployment {:?}, or a tampered key set)",
                            self.deployment
                        ),
                    }
                }
                _ => unavailable(detail),
            }
        })?;
        let plain = SecretBytes::new(
            out.plaintext
                .take()
                .map(Blob::into_inner)
                .ok_or_else(|| unavailable("Decrypt returned no plaintext"))?,
        );
        SecretKey::from_slice(plain.expose()).ok_or(RootKeyError::Malformed(NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purpose_is_the_label() {
        assert_eq!(purpose().as_bytes(), labels::KEYSET_KEY_WRAP);
    }

    #[test]
    fn malformed_is_caught_before_any_call() {
        // The endpoint is never contacted: `new` is bypassed.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        let p = AwsKmsProvider {
            rt: Some(rt),
            client: Client::from_conf(config),
            key_id: "k".into(),
            deployment: "d".into(),
            region: "us-east-1".into(),
            endpoint: None,
        };
        for bad in [&[][..], &[1], &[2, 0, 0]] {
            assert!(matches!(p.unwrap(bad), Err(RootKeyError::Malformed(NAME))));
        }
    }
}
