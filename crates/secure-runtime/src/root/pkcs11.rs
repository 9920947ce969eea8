//! The `pkcs11` root-key provider: a non-extractable AES-256 key in a
//! PKCS#11 token (an HSM, a cloud HSM, SoftHSM for tests), found by its
//! `CKA_LABEL` and used through `C_Encrypt`/`C_Decrypt` with `CKM_AES_GCM`.
//! The root key never leaves the token; only the key-set key and the IV
//! cross the library boundary.
//!
//! Wrapped key-set key layout:
//! ```text
//! u8(1) ‖ iv[12] ‖ C_Encrypt(CKM_AES_GCM{iv, aad, 128-bit tag}, token_key, keyset_key)
//!   (the token's output: ciphertext[32] ‖ tag[16]; 61 bytes in all)
//!   aad = "kms/keyset-key/v1" ‖ 0x00 ‖ "pkcs11" ‖ u8(1)
//! ```
//! The IV comes from our own CSPRNG, not the token's: a random 96-bit IV
//! per wrap, and a key-set key is wrapped a handful of times in a key's
//! life.
//!
//! The PKCS#11 library is initialised once per process and never finalised
//! (another provider instance, or another part of the process, may still
//! use it). A second login to a token the process is already logged in to
//! is accepted, as PKCS#11 logins are per application, not per session.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::{RawAuthPin, Ulong};
use kms_crypto::rng::{self, SystemRng};
use kms_crypto::{labels, SecretBytes, SecretKey};

use super::{read_secret, Pkcs11Settings, RootKeyError, RootKeyProvider};

const NAME: &str = "pkcs11";
const VERSION: u8 = 1;
const IV: usize = 12;
const TAG_BITS: usize = 128;
const WRAPPED_LEN: usize = 1 + IV + SecretKey::LEN + 16;

/// The token, its session and the key's handle. `Session` is `Send` but
/// not `Sync`: one operation at a time, behind the provider's mutex.
struct Token {
    session: Session,
    key: ObjectHandle,
    /// Keeps the library loaded for as long as the session lives.
    _ctx: Pkcs11,
}

/// The `pkcs11` provider.
pub struct Pkcs11Provider {
    token: Mutex<Token>,
    module: String,
    token_label: String,
    key_label: String,
}

impl std::fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Provider")
            .field("module", &self.module)
            .field("token", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

fn tag_bits() -> Result<Ulong, RootKeyError> {
    Ulong::try_from(TAG_BITS).map_err(|e| unavailable("the AES-GCM tag length", &e))
}

fn aad() -> Vec<u8> {
    let mut a = labels::KEYSET_KEY_WRAP.to_vec();
    a.push(0);
    a.extend_from_slice(NAME.as_bytes());
    a.push(VERSION);
    a
}

/// A short description of a cryptoki error: `C_Login: PinIncorrect`
/// rather than the specification's paragraph.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

fn unavailable(what: &str, e: &CkError) -> RootKeyError {
    RootKeyError::Unavailable {
        provider: NAME,
        detail: format!("{what}: {}", describe(e)),
    }
}

fn unavailable_msg(detail: String) -> RootKeyError {
    RootKeyError::Unavailable {
        provider: NAME,
        detail,
    }
}

impl Pkcs11Provider {
    /// Loads the module, opens a read-write session on the token, logs in
    /// as User and finds the AES key labelled `key_label` — generated in
    /// the token (non-extractable, sensitive) only when `create` allows.
    pub fn new(s: &Pkcs11Settings, create: bool) -> Result<Self, RootKeyError> {
        let module = s.module.display().to_string();
        let ctx = load(&s.module)?;
        let (slot, token_label) = find_token(&ctx, s.token_label.as_deref())?;
        let session = ctx
            .open_rw_session(slot)
            .map_err(|e| unavailable(&format!("opening a session on token {token_label:?}"), &e))?;
        let pin = read_secret(s.pin_file.as_deref(), s.pin_env, "PKCS#11 PIN")?;
        let pin = RawAuthPin::new(Box::new(pin.expose().to_vec()));
        match session.login_with_raw(UserType::User, &pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => {
                return Err(unavailable(
                    &format!("logging in to token {token_label:?}"),
                    &e,
                ))
            }
        }
        drop(pin);
        let key = match find_key(&session, &s.key_label, &token_label)? {
            Some(key) => key,
            None if create => {
                let key = generate_key(&session, &s.key_label, &token_label)?;
                tracing::info!(token = %token_label, key_label = %s.key_label,
                    "generated a new AES-256 root key in the PKCS#11 token");
                key
            }
            None => {
                return Err(unavailable_msg(format!(
                    "no AES key labelled {:?} in token {token_label:?}",
                    s.key_label
                )))
            }
        };
        Ok(Self {
            token: Mutex::new(Token {
                session,
                key,
                _ctx: ctx,
            }),
            module,
            token_label,
            key_label: s.key_label.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Token> {
        // A panic while holding the lock leaves no half-done state behind
        // that a later call could misuse: each call is one C_Encrypt or
        // C_Decrypt, which ends its operation whatever the outcome.
        self.token.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn load(module: &Path) -> Result<Pkcs11, RootKeyError> {
    let ctx = Pkcs11::new(module).map_err(|e| {
        unavailable_msg(format!(
            "loading the PKCS#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(unavailable(
            &format!("initialising the PKCS#11 module {}", module.display()),
            &e,
        )),
    }
}

/// The slot holding the token labelled `label`, or the first slot with a
/// token present.
fn find_token(ctx: &Pkcs11, label: Option<&str>) -> Result<(Slot, String), RootKeyError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| unavailable("listing the PKCS#11 slots", &e))?;
    let mut seen = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| unavailable("reading a PKCS#11 token's information", &e))?;
        let this = info.label().trim_end().to_owned();
        match label {
            None => return Ok((slot, this)),
            Some(want) if want == this => return Ok((slot, this)),
            Some(_) => seen.push(this),
        }
    }
    Err(unavailable_msg(match label {
        Some(want) => format!("no PKCS#11 token labelled {want:?} (tokens present: {seen:?})"),
        None => "no PKCS#11 slot has a token present".to_owned(),
    }))
}

fn find_key(
    session: &Session,
    key_label: &str,
    token_label: &str,
) -> Result<Option<ObjectHandle>, RootKeyError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Label(key_label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|e| unavailable(&format!("searching token {token_label:?}"), &e))?;
    let key = match found.as_slice() {
        [] => return Ok(None),
        [key] => *key,
        more => {
            return Err(RootKeyError::Config(format!(
                "{} AES keys labelled {key_label:?} in PKCS#11 token {token_label:?}; the label must name one",
                more.len()
            )))
        }
    };
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::ValueLen,
            ],
        )
        .map_err(|e| unavailable(&format!("reading the attributes of key {key_label:?}"), &e))?;
    let (mut extractable, mut sensitive, mut len) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::Extractable(v) => extractable = Some(v),
            Attribute::Sensitive(v) => sensitive = Some(v),
            Attribute::ValueLen(v) => len = Some(usize::from(v)),
            _ => {}
        }
    }
    let refuse = |why: &str| {
        Err(RootKeyError::Config(format!(
            "the PKCS#11 key {key_label:?} in token {token_label:?} {why}; a root key must be a sensitive, non-extractable AES-256 key"
        )))
    };
    if extractable != Some(false) {
        return refuse("is extractable (or does not say it is not)");
    }
    if sensitive != Some(true) {
        return refuse("is not sensitive");
    }
    if len.is_some_and(|l| l != SecretKey::LEN) {
        return refuse("is not 32 bytes long");
    }
    Ok(Some(key))
}

fn generate_key(
    session: &Session,
    key_label: &str,
    token_label: &str,
) -> Result<ObjectHandle, RootKeyError> {
    let len = Ulong::try_from(SecretKey::LEN).map_err(|e| unavailable("CKA_VALUE_LEN", &e))?;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(len),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(key_label.as_bytes().to_vec()),
    ];
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| {
            unavailable(
                &format!("generating the AES key {key_label:?} in token {token_label:?}"),
                &e,
            )
        })
}

impl RootKeyProvider for Pkcs11Provider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, RootKeyError> {
        let iv: [u8; IV] =
            rng::array(&mut SystemRng).map_err(|e| unavailable_msg(e.to_string()))?;
        let aad = aad();
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, &aad, tag_bits()?)
            .map_err(|e| unavailable("building the AES-GCM parameters", &e))?;
        let token = self.lock();
        let sealed = token
            .session
            .encrypt(&Mechanism::AesGcm(params), token.key, key.expose())
            .map_err(|e| unavailable("C_Encrypt with the root key", &e))?;
        drop(token);
        if sealed.len() != WRAPPED_LEN - 1 - IV {
            return Err(unavailable_msg(format!(
                "the token returned {} bytes of AES-GCM output, expected {}",
                sealed.len(),
                WRAPPED_LEN - 1 - IV
            )));
        }
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.push(VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretKey, RootKeyError> {
        if wrapped.len() != WRAPPED_LEN || wrapped[0] != VERSION {
            return Err(RootKeyError::Malformed(NAME));
        }
        let mut iv = [0u8; IV];
        iv.copy_from_slice(&wrapped[1..1 + IV]);
        let aad = aad();
        let params = GcmParams::new(&mut iv, &aad, tag_bits()?)
            .map_err(|e| unavailable("building the AES-GCM parameters", &e))?;
        let token = self.lock();
        let plain = token
            .session
            .decrypt(&Mechanism::AesGcm(params), token.key, &wrapped[1 + IV..])
            .map(SecretBytes::new);
        drop(token);
        // A failed tag check is CKR_ENCRYPTED_DATA_INVALID in the
        // specification; tokens also say CKR_FUNCTION_FAILED, and SoftHSM2
        // says CKR_GENERAL_ERROR (its decryptFinal failing). From C_Decrypt
        // itself, after C_DecryptInit accepted the key, all three mean the
        // data does not open under this key.
        let plain = plain.map_err(|e| match e {
            CkError::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::FunctionFailed
                | RvError::GeneralError,
                Function::Decrypt,
            ) => RootKeyError::Refused {
                provider: NAME,
                detail: format!(
                    "the token's key {:?} does not open it ({}): another root key, or a tampered key set",
                    self.key_label,
                    describe(&e)
                ),
            },
            e => unavailable("C_Decrypt with the root key", &e),
        })?;
        SecretKey::from_slice(plain.expose()).ok_or(RootKeyError::Malformed(NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_binds_label_provider_and_version() {
        assert_eq!(aad(), b"kms/keyset-key/v1\0pkcs11\x01");
        assert_eq!(WRAPPED_LEN, 61);
    }
}
