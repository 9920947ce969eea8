//! OpenAPI schemas of the byte-valued wire types: strings in canonical
//! base64url (or hex, or a UUID) with their lengths, so a schema-driven
//! client or fuzzer produces what docs/protocol.md allows.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::audit::Digest32;
use crate::{Bytes, Bytes32, DerivationPath, HpkeCiphertext, Id, Nonce, P256PublicKey, Signature};

/// Canonical base64url without padding: whole quanta of 4 characters,
/// then a 2- or 3-character tail whose unused low bits are zero. The
/// patterns below pin the byte lengths too, so generated values are
/// exactly the ones docs/protocol.md allows.
const Q: &str = "[A-Za-z0-9_-]{4}";
const T1: &str = "[A-Za-z0-9_-][AQgw]";
const T2: &str = "[A-Za-z0-9_-]{2}[AEIMQUYcgkosw048]";

fn b64(description: &str, pattern: String) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
            .pattern(Some(pattern))
            .build(),
    ))
}

macro_rules! schema {
    ($t:ty, $name:literal, $body:expr) => {
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                $body
            }
        }
        impl ToSchema for $t {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

schema!(
    Id,
    "Id",
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .pattern(Some(
                "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
            ))
            .description(Some("UUID, lowercase hyphenated"))
            .build()
    ))
);
// 65 bytes starting 0x04: "B", then 2 zero bits and 4 data bits.
schema!(
    P256PublicKey,
    "P256PublicKey",
    b64(
        "P-256 public key, SEC1 uncompressed (65 bytes, 0x04 ‖ X ‖ Y), base64url",
        "^B[A-P][A-Za-z0-9_-]{84}[AEIMQUYcgkosw048]$".to_owned()
    )
);
schema!(
    Signature,
    "Signature",
    b64(
        "a 64-byte signature (ECDSA r‖s, BIP-340 or Ed25519), base64url",
        "^[A-Za-z0-9_-]{85}[AQgw]$".to_owned()
    )
);
// 32 bytes: 10 quanta and a 2-byte tail.
schema!(
    Bytes32,
    "Bytes32",
    b64(
        "exactly 32 bytes, base64url",
        format!("^(?:{Q}){{10}}{T2}$")
    )
);
/// One index of a path: 0 to 2147483647, digits only, no leading zeros.
const INDEX: &str = "(?:0|[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}\
|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}\
|21474836[0-3][0-9]|214748364[0-7])";
schema!(
    DerivationPath,
    "DerivationPath",
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^m(?:/{INDEX}'?){{0,16}}$")))
            .description(Some(
                "m and 0 to 16 steps /i or /i' (hardened), i in [0, 2^31-1] without leading zeros"
            ))
            .build()
    ))
);
// 16 to 64 bytes: 5 quanta and a tail, 6 to 20 quanta and any tail, or 21 quanta and at most 1 byte.
schema!(
    Nonce,
    "Nonce",
    b64(
        "16 to 64 random bytes, base64url",
        format!(
            "^(?:(?:{Q}){{5}}(?:{T1}|{T2})|(?:{Q}){{6,20}}(?:{T1}|{T2})?|(?:{Q}){{21}}(?:{T1})?)$"
        )
    )
);
schema!(
    HpkeCiphertext,
    "HpkeCiphertext",
    b64(
        "HPKE enc ‖ ct (at least 81 bytes), base64url",
        format!("^(?:{Q}){{27,}}(?:{T1}|{T2})?$")
    )
);
schema!(
    Bytes,
    "Bytes",
    b64("bytes, base64url", format!("^(?:{Q})*(?:{T1}|{T2})?$"))
);
schema!(
    Digest32,
    "Digest32",
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("32 bytes, lowercase hex"))
            .build()
    ))
);
