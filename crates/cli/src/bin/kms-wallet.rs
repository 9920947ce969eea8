//! `kms-wallet`: the command line for people who hold wallets in the KMS
//! (not the operator's `kms-admin`). Generate or import a wallet, derive
//! keys, show public keys, xpubs and addresses, sign, and verify. Every
//! answer from the service is checked against the pinned identity key
//! first; addresses are computed here, from verified public keys.
//!
//! Secrets (mnemonics, xprvs, owner keys) are read from files or stdin,
//! never from arguments, which other users of the machine can see.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use kms_client::address::{self, Network};
use kms_client::{
    authorize_sign_for, parse_identity_public_key, verify_signature, Algorithm, Curve,
    DerivationPath, Id, KeyMaterial, KeyType, KmsClient, SecretBytes, SecretKey, SigningKey,
    ToSign,
};
use kms_crypto::hd;
use kms_crypto::sha256;
use kms_protocol::b64;
use serde_json::json;
use zeroize::Zeroizing;

/// Generate, import, derive, show addresses, sign and verify with wallets
/// held in the KMS.
#[derive(Debug, Parser)]
#[command(name = "kms-wallet", version, about)]
struct Cli {
    /// Base URL of kms-api.
    #[arg(
        long,
        env = "KMS_API_URL",
        default_value = "http://127.0.0.1:3002",
        global = true
    )]
    api_url: String,
    /// The secure environment's identity public key (base64url), pinned out
    /// of band. Default: read from --identity-file.
    #[arg(long, env = "KMS_IDENTITY_PUBLIC_KEY", global = true)]
    identity_public_key: Option<String>,
    /// File holding the identity public key (as `secure-environment identity` prints it).
    #[arg(
        long,
        env = "KMS_IDENTITY_FILE",
        default_value = "data/secure-environment/identity.pub",
        global = true
    )]
    identity_file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GenType {
    Bip39,
    Bip32,
    Secp256k1,
    P256,
    Ed25519,
}

impl From<GenType> for KeyType {
    fn from(g: GenType) -> Self {
        match g {
            GenType::Bip39 => KeyType::Bip39,
            GenType::Bip32 => KeyType::Bip32,
            GenType::Secp256k1 => KeyType::Secp256k1,
            GenType::P256 => KeyType::P256,
            GenType::Ed25519 => KeyType::Ed25519,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CurveArg {
    Secp256k1,
    P256,
    Ed25519,
}

impl From<CurveArg> for Curve {
    fn from(c: CurveArg) -> Self {
        match c {
            CurveArg::Secp256k1 => Curve::Secp256k1,
            CurveArg::P256 => Curve::P256,
            CurveArg::Ed25519 => Curve::Ed25519,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    EcdsaSecp256k1,
    SchnorrSecp256k1,
    SchnorrSecp256k1Taproot,
    Ed25519,
    EcdsaP256,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(a: AlgorithmArg) -> Self {
        match a {
            AlgorithmArg::EcdsaSecp256k1 => Algorithm::EcdsaSecp256k1,
            AlgorithmArg::SchnorrSecp256k1 => Algorithm::SchnorrSecp256k1,
            AlgorithmArg::SchnorrSecp256k1Taproot => Algorithm::SchnorrSecp256k1Taproot,
            AlgorithmArg::Ed25519 => Algorithm::Ed25519,
            AlgorithmArg::EcdsaP256 => Algorithm::EcdsaP256,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AddressKind {
    /// Ethereum and other EVM chains: EIP-55 checksummed.
    Evm,
    /// Bitcoin native SegWit v0 (BIP-84), bech32.
    P2wpkh,
    /// Bitcoin Taproot key path (BIP-86), bech32m.
    P2tr,
}

/// How `--message` becomes the 32-byte payload of the digest algorithms.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashArg {
    Sha256,
    /// SHA-256 twice (Bitcoin).
    Sha256d,
    /// Keccak-256 (Ethereum).
    Keccak256,
    /// EIP-191 `personal_sign`: Keccak-256 of "\x19Ethereum Signed Message:\n" ‖ len ‖ message.
    Eip191,
}

#[derive(Debug, clap::Args)]
struct KeyAt {
    /// The wallet.
    #[arg(long, value_parser = wallet_id)]
    wallet: Id,
    /// Path of the key in an HD wallet (e.g. m/44'/60'/0'/0/0); omit for a single-key wallet.
    #[arg(long)]
    path: Option<DerivationPath>,
}

#[derive(Debug, clap::Args)]
struct Payload {
    /// The 32-byte digest to sign, hex (what the chain's signing rules hashed).
    #[arg(long, conflicts_with_all = ["message", "message_file"])]
    digest: Option<String>,
    /// A text message: ed25519 signs it as is; the other algorithms sign its hash (--hash).
    #[arg(long, conflicts_with = "message_file")]
    message: Option<String>,
    /// A file whose bytes are the message.
    #[arg(long)]
    message_file: Option<PathBuf>,
    /// How a message is hashed for the digest algorithms.
    #[arg(long, value_enum, default_value = "sha256")]
    hash: HashArg,
}

#[derive(Debug, Subcommand)]
enum ImportKind {
    /// A BIP-39 English mnemonic (no passphrase), read from --file or stdin.
    Mnemonic {
        #[arg(long)]
        file: Option<PathBuf>,
        /// Bind the wallet to this owner key (see `owner-key`).
        #[arg(long)]
        owner_key_file: Option<PathBuf>,
    },
    /// A BIP-32 extended private key (xprv/tprv string), read from --file or stdin.
    Xprv {
        #[arg(long)]
        file: Option<PathBuf>,
        #[arg(long)]
        owner_key_file: Option<PathBuf>,
    },
    /// A BitGo keycard's encrypted key (the JSON box BitGo's SDK makes, v1
    /// SJCL or v2 Argon2id) with its wallet passphrase: both are sealed to
    /// the session and opened only inside the secure environment, so the
    /// xprv never exists on this machine. It becomes a `bip32` wallet.
    Keycard {
        /// File holding the box (the keycard's "encrypted private key" JSON).
        #[arg(long = "box")]
        box_file: PathBuf,
        /// File holding the wallet passphrase (or stdin without it).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// The key's xpub from the keycard: the receipt must name its key.
        #[arg(long)]
        xpub: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a wallet inside the secure environment.
    Generate {
        #[arg(long, value_enum, default_value = "bip39")]
        key_type: GenType,
        /// Bind the wallet to this owner key: signing and export then need its signature.
        #[arg(long)]
        owner_key_file: Option<PathBuf>,
    },
    /// Import a mnemonic or an xprv through an attested, sealed session.
    Import {
        #[command(subcommand)]
        kind: ImportKind,
    },
    /// The public key and chain code at a path, signed by the service.
    Derive {
        #[arg(long, value_parser = wallet_id)]
        wallet: Id,
        #[arg(long, value_enum, default_value = "secp256k1")]
        curve: CurveArg,
        #[arg(long)]
        path: DerivationPath,
    },
    /// A wallet's public key: at --path on --curve for HD wallets (signed),
    /// or the single key's (from the wallet's metadata).
    Pubkey {
        #[command(flatten)]
        at: KeyAt,
        #[arg(long, value_enum, default_value = "secp256k1")]
        curve: CurveArg,
    },
    /// The xpub (or tpub) of the secp256k1 node at --path of an HD wallet.
    Xpub {
        #[arg(long, value_parser = wallet_id)]
        wallet: Id,
        #[arg(long)]
        path: DerivationPath,
        #[arg(long)]
        testnet: bool,
    },
    /// An address of the key at --path (or the single key).
    Address {
        #[command(flatten)]
        at: KeyAt,
        #[arg(long, value_enum, default_value = "evm")]
        kind: AddressKind,
        /// Bitcoin testnet (tb1…) instead of mainnet (bc1…).
        #[arg(long)]
        testnet: bool,
    },
    /// Sign a digest or a message; the signature is verified before it is printed.
    Sign {
        #[command(flatten)]
        at: KeyAt,
        #[arg(long, value_enum)]
        algorithm: AlgorithmArg,
        #[command(flatten)]
        payload: Payload,
        /// BIP-341 script tree root, hex (taproot only).
        #[arg(long)]
        merkle_root: Option<String>,
        /// The owner key of an owner-bound wallet.
        #[arg(long)]
        owner_key_file: Option<PathBuf>,
    },
    /// Verify a signature offline.
    Verify {
        #[arg(long, value_enum)]
        algorithm: AlgorithmArg,
        /// The public key, hex, as `sign` printed it.
        #[arg(long)]
        public_key: String,
        /// The signature, hex.
        #[arg(long)]
        signature: String,
        #[command(flatten)]
        payload: Payload,
    },
    /// Write a new P-256 owner key to FILE (mode 0600) and print its public key.
    OwnerKey { file: PathBuf },
}

/// A wallet id as printed (the hyphenated UUID, any case).
fn wallet_id(text: &str) -> Result<Id, String> {
    Id::parse_path(text).map_err(|_| "expected a hyphenated UUID".to_owned())
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    let t = text.trim().trim_start_matches("0x");
    kms_crypto::unhex(t).with_context(|| format!("not hex: {text}"))
}

/// Reads a secret from a file, or from stdin when no file is given.
fn read_secret(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(f) => {
            let mut h =
                std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
            h.read_to_string(&mut text)?;
        }
        None => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    Ok(text)
}

fn read_owner(file: &Path) -> anyhow::Result<SigningKey> {
    let text = read_secret(Some(file))?;
    let bytes = Zeroizing::new(
        b64::decode(text.trim()).map_err(|_| anyhow::anyhow!("owner key file is not base64url"))?,
    );
    let scalar = SecretKey::from_slice(&bytes).context("an owner key is 32 bytes")?;
    Ok(SigningKey::from_scalar(scalar)?)
}

fn message_bytes(p: &Payload) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(match (&p.message, &p.message_file) {
        (Some(m), _) => Some(m.as_bytes().to_vec()),
        (None, Some(f)) => {
            Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => None,
    })
}

/// The payload the service signs: a digest as given, an ed25519 message as
/// is, other messages hashed.
fn payload(algorithm: Algorithm, p: &Payload) -> anyhow::Result<Vec<u8>> {
    if let Some(d) = &p.digest {
        let d = unhex(d)?;
        if algorithm != Algorithm::Ed25519 && d.len() != 32 {
            bail!("a digest is 32 bytes");
        }
        return Ok(d);
    }
    let Some(m) = message_bytes(p)? else {
        bail!("give --digest, --message or --message-file");
    };
    if algorithm == Algorithm::Ed25519 {
        return Ok(m);
    }
    Ok(match p.hash {
        HashArg::Sha256 => sha256(&m).to_vec(),
        HashArg::Sha256d => sha256(&sha256(&m)).to_vec(),
        HashArg::Keccak256 => address::keccak256(&m).to_vec(),
        HashArg::Eip191 => {
            let mut data = format!("\x19Ethereum Signed Message:\n{}", m.len()).into_bytes();
            data.extend_from_slice(&m);
            address::keccak256(&data).to_vec()
        }
    })
}

struct App {
    kms: KmsClient,
    json: bool,
}

impl App {
    fn print(&self, text: String, value: serde_json::Value) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    /// The trusted public key at `at` on `curve`: derived (and verified)
    /// for an HD wallet, the metadata's for a single-key wallet.
    async fn public_key(&self, at: &KeyAt, curve: Curve) -> anyhow::Result<(Vec<u8>, bool)> {
        match &at.path {
            Some(p) => {
                let k = self.kms.derive(&at.wallet, curve, p).await?;
                Ok((k.public_key.as_bytes().to_vec(), true))
            }
            None => {
                let meta = self.kms.wallet(&at.wallet).await?;
                if meta.key_type.is_hd() {
                    bail!("this is an HD wallet: give --path");
                }
                let pk = meta
                    .public_key
                    .context("this wallet has no public key (raw)")?;
                Ok((pk.as_bytes().to_vec(), false))
            }
        }
    }

    async fn import(&self, material: KeyMaterial, owner: Option<&Path>) -> anyhow::Result<()> {
        let material = match owner {
            Some(f) => material
                .with_owner(*read_owner(f)?.public_key())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            None => material,
        };
        let r = self.kms.import(&material).await?;
        self.print(
            format!(
                "wallet {}  key type {}  (receipt verified)",
                r.wallet_id, r.key_type
            ),
            json!({"wallet_id": r.wallet_id, "key_type": r.key_type, "public_key": r.public_key}),
        );
        Ok(())
    }

    async fn run(&self, command: Command) -> anyhow::Result<()> {
        match command {
            Command::Generate {
                key_type,
                owner_key_file,
            } => {
                let owner = owner_key_file.as_deref().map(read_owner).transpose()?;
                let r = self
                    .kms
                    .generate(key_type.into(), owner.map(|o| *o.public_key()))
                    .await?;
                let pk = r.public_key.as_ref().map(|p| kms_crypto::hex(p.as_bytes()));
                self.print(
                    format!(
                        "wallet {}  key type {}  public key {}  (receipt verified)",
                        r.wallet_id,
                        r.key_type,
                        pk.as_deref().unwrap_or("none: derive a path")
                    ),
                    json!({"wallet_id": r.wallet_id, "key_type": r.key_type, "public_key": pk,
                           "owner_bound": r.owner_public_key.is_some(), "created_at": r.created_at}),
                );
            }
            Command::Import { kind } => {
                match kind {
                    ImportKind::Mnemonic {
                        file,
                        owner_key_file,
                    } => {
                        let words = read_secret(file.as_deref())?;
                        let normalized =
                            Zeroizing::new(words.split_whitespace().collect::<Vec<_>>().join(" "));
                        let entropy =
                            hd::bip39_entropy(&normalized).map_err(|e| anyhow::anyhow!(e))?;
                        let material = KeyMaterial::new(KeyType::Bip39, entropy, None)?;
                        self.import(material, owner_key_file.as_deref()).await?;
                    }
                    ImportKind::Xprv {
                        file,
                        owner_key_file,
                    } => {
                        let text = read_secret(file.as_deref())?;
                        let bytes = SecretBytes::new(
                            address::base58check_decode(text.trim())
                                .map_err(|e| anyhow::anyhow!("{e}"))?,
                        );
                        let material = KeyMaterial::new(KeyType::Bip32, bytes, None)
                            .map_err(|e| anyhow::anyhow!("not a usable xprv: {e}"))?;
                        self.import(material, owner_key_file.as_deref()).await?;
                    }
                    ImportKind::Keycard {
                        box_file,
                        passphrase_file,
                        xpub,
                    } => {
                        let sealed = read_secret(Some(&box_file))?;
                        let passphrase = read_secret(passphrase_file.as_deref())?;
                        let passphrase = passphrase.trim_end_matches(['\r', '\n']);
                        let expected = match &xpub {
                            Some(x) => {
                                let raw = address::base58check_decode(x.trim())
                                    .map_err(|e| anyhow::anyhow!("--xpub: {e}"))?;
                                anyhow::ensure!(raw.len() == 78, "--xpub is not a BIP-32 xpub");
                                Some(raw[45..78].to_vec())
                            }
                            None => None,
                        };
                        let r = self
                            .kms
                            .import_keycard(sealed.trim(), passphrase, expected.as_deref())
                            .await?;
                        let pk = r.public_key.as_ref().map(|p| kms_crypto::hex(p.as_bytes()));
                        self.print(
                        format!(
                            "wallet {}  key type {}  public key {}  (receipt verified{})",
                            r.wallet_id,
                            r.key_type,
                            pk.as_deref().unwrap_or("?"),
                            if xpub.is_some() { ", matches --xpub" } else { "" }
                        ),
                        json!({"wallet_id": r.wallet_id, "key_type": r.key_type, "public_key": pk}),
                    );
                    }
                }
            }
            Command::Derive {
                wallet,
                curve,
                path,
            } => {
                let k = self.kms.derive(&wallet, curve.into(), &path).await?;
                let pk = kms_crypto::hex(k.public_key.as_bytes());
                let cc = kms_crypto::hex(k.chain_code.as_bytes());
                self.print(
                    format!("{} {}\n  public key  {pk}\n  chain code  {cc}\n  (signed by the pinned identity key)", k.curve, k.path),
                    json!({"wallet_id": wallet, "curve": k.curve, "path": k.path, "public_key": pk, "chain_code": cc}),
                );
            }
            Command::Pubkey { at, curve } => {
                let (pk, signed) = self.public_key(&at, curve.into()).await?;
                let pk = kms_crypto::hex(&pk);
                let note = if signed {
                    "signed by the pinned identity key"
                } else {
                    "from the wallet's metadata; its import or generate receipt vouches for it"
                };
                self.print(
                    format!("{pk}  ({note})"),
                    json!({"public_key": pk, "signed": signed}),
                );
            }
            Command::Xpub {
                wallet,
                path,
                testnet,
            } => {
                let node = self.kms.derive(&wallet, Curve::Secp256k1, &path).await?;
                let parent_fingerprint = match path.parent() {
                    Some(parent) => {
                        let p = self.kms.derive(&wallet, Curve::Secp256k1, &parent).await?;
                        address::fingerprint(p.public_key.as_bytes())
                    }
                    None => [0; 4],
                };
                let child = path.steps().last().map_or(0, |s| s.to_u32());
                let depth = u8::try_from(path.depth()).context("depth")?;
                let pk: [u8; 33] = node
                    .public_key
                    .as_bytes()
                    .try_into()
                    .context("key length")?;
                let network = if testnet {
                    Network::Testnet
                } else {
                    Network::Mainnet
                };
                let x = address::xpub(
                    network,
                    depth,
                    parent_fingerprint,
                    child,
                    node.chain_code.as_bytes(),
                    &pk,
                );
                self.print(x.clone(), json!({"path": path, "xpub": x}));
            }
            Command::Address { at, kind, testnet } => {
                let (pk, _) = self.public_key(&at, Curve::Secp256k1).await?;
                let network = if testnet {
                    Network::Testnet
                } else {
                    Network::Mainnet
                };
                let addr = match kind {
                    AddressKind::Evm => address::ethereum_address(&pk),
                    AddressKind::P2wpkh => address::p2wpkh_address(&pk, network),
                    AddressKind::P2tr => address::p2tr_address(&pk, network),
                }
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                self.print(addr.clone(), json!({"address": addr}));
            }
            Command::Sign {
                at,
                algorithm,
                payload: p,
                merkle_root,
                owner_key_file,
            } => {
                let algorithm: Algorithm = algorithm.into();
                let merkle_root = merkle_root
                    .map(|m| -> anyhow::Result<[u8; 32]> {
                        unhex(&m)?
                            .try_into()
                            .map_err(|_| anyhow::anyhow!("a merkle root is 32 bytes"))
                    })
                    .transpose()?;
                let what = ToSign {
                    algorithm,
                    path: at.path,
                    payload: payload(algorithm, &p)?,
                    merkle_root,
                };
                let (trusted, _) = self.public_key(&at, algorithm.curve()).await?;
                let auth = owner_key_file
                    .as_deref()
                    .map(|f| {
                        authorize_sign_for(&read_owner(f)?, &at.wallet, &what, 60)
                            .map_err(anyhow::Error::from)
                    })
                    .transpose()?;
                let r = self
                    .kms
                    .sign_authorized(&at.wallet, &what, auth, Some(&trusted))
                    .await?;
                let sig = kms_crypto::hex(r.signature.as_bytes());
                let pk = kms_crypto::hex(r.public_key.as_bytes());
                let rid = r
                    .recovery_id
                    .map(|id| format!("\n  recovery id {id} (Ethereum v = {})", 27 + u32::from(id)))
                    .unwrap_or_default();
                self.print(
                    format!("signature   {sig}\n  public key  {pk}{rid}\n  (verified)"),
                    json!({"algorithm": algorithm, "public_key": pk, "signature": sig,
                           "recovery_id": r.recovery_id, "payload": kms_crypto::hex(&what.payload)}),
                );
            }
            Command::Verify {
                algorithm,
                public_key,
                signature,
                payload: p,
            } => {
                let algorithm: Algorithm = algorithm.into();
                let sig: [u8; 64] = unhex(&signature)?
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("a signature is 64 bytes"))?;
                let data = payload(algorithm, &p)?;
                match verify_signature(algorithm, &unhex(&public_key)?, &data, &sig) {
                    Ok(()) => self.print("valid".to_owned(), json!({"valid": true})),
                    Err(_) => {
                        self.print("INVALID".to_owned(), json!({"valid": false}));
                        bail!("the signature does not verify");
                    }
                }
            }
            Command::OwnerKey { file } => unreachable!("handled before connecting: {file:?}"),
        }
        Ok(())
    }
}

fn write_owner_key(file: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = SigningKey::generate()?;
    let text = Zeroizing::new(b64::encode(key.scalar().expose()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("creating {} (it must not exist yet)", file.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    println!("{}", b64::encode(key.public_key().as_bytes()));
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::OwnerKey { file } = &cli.command {
        return write_owner_key(file);
    }
    let pinned = match &cli.identity_public_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(&cli.identity_file).with_context(|| {
            format!(
                "no --identity-public-key given and {} is unreadable",
                cli.identity_file.display()
            )
        })?,
    };
    let identity = parse_identity_public_key(&pinned).context("pinned identity key")?;
    let app = App {
        kms: KmsClient::new(&cli.api_url, identity)?,
        json: cli.json,
    };
    app.run(cli.command).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-wallet: {e:#}");
            ExitCode::FAILURE
        }
    }
}
