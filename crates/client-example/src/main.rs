//! The demo: import a fresh secp256k1 key through an attested session,
//! export it to a fresh P-256 key, and show it came back byte-identical;
//! then the same for an owner-bound wallet, and a data key used for
//! envelope encryption (docs/data-keys.md).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use kms_client::{
    authorize_export_for, encryption_context, generate_key_material, parse_identity_public_key,
    ClientError, EncryptionContext, HpkeSecretKey, KeyType, KmsClient, SigningKey,
};
use kms_protocol::ErrorCode;

/// Full import/export round trip through kms-api with the Rust SDK.
#[derive(Debug, Parser)]
#[command(name = "client-example", version, about)]
struct Cli {
    /// Base URL of kms-api.
    #[arg(long, env = "KMS_API_URL", default_value = "http://127.0.0.1:3002")]
    api_url: String,

    /// The secure environment's identity public key (base64url), pinned out
    /// of band. Default: read from data/secure-environment/identity.pub.
    #[arg(long, env = "KMS_IDENTITY_PUBLIC_KEY")]
    identity_public_key: Option<String>,

    /// Key type to import.
    #[arg(long, default_value = "secp256k1", value_parser = ["secp256k1", "p256", "ed25519", "raw"])]
    key_type: String,
}

const DEFAULT_IDENTITY_FILE: &str = "data/secure-environment/identity.pub";

fn short(bytes: &[u8]) -> String {
    let h = kms_crypto::hex(bytes);
    match (h.get(..8), h.get(h.len().saturating_sub(8)..)) {
        (Some(head), Some(tail)) if h.len() > 16 => format!("{head}…{tail}"),
        _ => h,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let pinned_text = match &cli.identity_public_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(PathBuf::from(DEFAULT_IDENTITY_FILE)).with_context(|| {
            format!("no --identity-public-key given and {DEFAULT_IDENTITY_FILE} is unreadable (run secure-environment first)")
        })?,
    };
    let identity = parse_identity_public_key(&pinned_text).context("pinned identity key")?;
    let key_type = KeyType::parse(&cli.key_type).context("key type")?;
    let kms = KmsClient::new(&cli.api_url, identity)?;

    println!("KMS demo against {}", cli.api_url);
    println!("  pinned identity key   {}", short(identity.as_bytes()));

    let att = kms.attestation().await.context("attestation")?;
    println!(
        "1. attestation         provider {}, identity matches the pin, measurement {}…",
        att.provider,
        att.measurement.get(..16).unwrap_or(&att.measurement)
    );

    let session = kms
        .start_import_session()
        .await
        .context("starting the import session")?;
    println!(
        "2. import session      {} — proof verified, session key {}",
        session.id(),
        short(session.public_key().as_bytes())
    );

    let material = generate_key_material(key_type)?;
    let receipt = kms
        .complete_import(&session, &material)
        .await
        .context("completing the import")?;
    let public = receipt
        .public_key
        .as_ref()
        .map(|p| short(p.as_bytes()))
        .unwrap_or_else(|| "none".into());
    println!(
        "3. imported            wallet {} ({}), public key {public} — receipt verified",
        receipt.wallet_id, receipt.key_type
    );

    let meta = kms
        .wallet(&receipt.wallet_id)
        .await
        .context("wallet metadata")?;
    if meta.wallet_id != receipt.wallet_id || meta.key_type != key_type {
        bail!("wallet metadata does not match the receipt");
    }

    let recipient = HpkeSecretKey::generate()?;
    let exported = kms
        .export(&receipt.wallet_id, &recipient)
        .await
        .context("exporting the wallet")?;
    println!(
        "4. exported            sealed to a fresh P-256 key {} — bundle signature verified",
        short(recipient.public_key().as_bytes())
    );

    if !exported.private_key().ct_eq(material.private_key()) || exported.key_type() != key_type {
        bail!("the exported key differs from the imported one");
    }
    println!("5. opened the export   the {key_type} key came back byte-identical ✔");

    owner_bound_round_trip(&kms, key_type).await?;
    data_key_round_trip(&kms).await
}

/// docs/protocol.md §6: a wallet bound to an owner key exports only with the
/// owner's signature, which the secure environment checks.
async fn owner_bound_round_trip(kms: &KmsClient, key_type: KeyType) -> anyhow::Result<()> {
    let owner = SigningKey::generate()?;
    let material = generate_key_material(key_type)?
        .with_owner(*owner.public_key())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let receipt = kms
        .import(&material)
        .await
        .context("importing the owner-bound wallet")?;
    println!(
        "6. owner-bound import  wallet {} bound to owner key {} — receipt verified",
        receipt.wallet_id,
        short(owner.public_key().as_bytes())
    );

    let recipient = HpkeSecretKey::generate()?;
    match kms.export(&receipt.wallet_id, &recipient).await {
        Err(ClientError::Api {
            status: 401,
            code: ErrorCode::AuthorizationRequired,
            ..
        }) => {
            println!(
                "7. export, unsigned    refused with 401 authorization_required, as it must be ✔"
            );
        }
        other => {
            bail!("an owner-bound export without authorization must be refused, got {other:?}")
        }
    }
    let authorization =
        authorize_export_for(&owner, &receipt.wallet_id, recipient.public_key(), 120)?;
    let exported = kms
        .export_authorized(&receipt.wallet_id, &recipient, Some(authorization))
        .await
        .context("exporting with the owner's authorization")?;
    if !exported.private_key().ct_eq(material.private_key()) {
        bail!("the owner-bound export differs from the imported key");
    }
    println!(
        "8. export, signed      with the owner's authorization: the key came back byte-identical ✔"
    );
    Ok(())
}

/// docs/data-keys.md: a data key generated in the secure environment,
/// used locally, and decrypted again from its wrapped form only with the
/// same encryption context.
async fn data_key_round_trip(kms: &KmsClient) -> anyhow::Result<()> {
    const MESSAGE: &[u8] = b"a backup encrypted under a data key";
    let context = encryption_context([("app", "client-example"), ("purpose", "backup")])?;
    let recipient = HpkeSecretKey::generate()?;
    let dk = kms
        .generate_data_key(&context, recipient.public_key())
        .await
        .context("generating a data key")?;
    let key = kms.open_data_key(&dk, &context, &recipient)?;
    let mut sealed = Vec::new();
    kms_crypto::aead::encrypt(&key, b"demo", MESSAGE, &mut sealed)?;
    drop(key);
    println!(
        "9. data key            {} (master key v{}) sealed to a fresh key — signature verified, a message encrypted under it",
        dk.data_key_id, dk.master_key_version
    );

    let other = HpkeSecretKey::generate()?;
    let again = kms
        .decrypt_data_key(dk.wrapped_key.as_bytes(), &context, other.public_key())
        .await
        .context("decrypting the data key")?;
    let key = kms.open_data_key(&again, &context, &other)?;
    let opened = kms_crypto::aead::decrypt(&key, b"demo", &sealed).map_err(|_| {
        anyhow::anyhow!("the message does not decrypt under the decrypted data key")
    })?;
    if opened.expose() != MESSAGE {
        bail!("the message decrypted to something else");
    }
    println!(
        "10. decrypted          from its wrapped form, sealed to another fresh key: the message decrypts ✔"
    );

    match kms
        .decrypt_data_key(
            dk.wrapped_key.as_bytes(),
            &EncryptionContext::default(),
            other.public_key(),
        )
        .await
    {
        Err(ClientError::Api {
            status: 422,
            code: ErrorCode::DecryptionFailed,
            ..
        }) => {
            println!("11. other context      refused with 422 decryption_failed, as it must be ✔");
        }
        other => {
            bail!("a data key must not decrypt with another encryption context, got {other:?}")
        }
    }
    Ok(())
}
