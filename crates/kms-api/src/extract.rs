//! Our own extractors, so every malformed request is answered in
//! docs/protocol.md's format ("Request bodies", "Encodings").

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use kms_protocol::api::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
use kms_protocol::{ErrorCode, Id, MAX_BODY_BYTES};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON object body of at most 64 KiB, whatever its `Content-Type`; an
/// empty body counts as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req.into_body()).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Reads a body, refusing it with 413 as soon as it passes the limit (for
/// bodies whose length was not declared up front).
pub async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::client(
            ErrorCode::PayloadTooLarge,
            "request body over 64 KiB",
        )),
        Err(_) => Err(ApiError::bad_request("could not read the request body")),
    }
}

/// Parses a request body: a JSON object (empty counts as `{}`). The whole
/// body must be UTF-8 (RFC 8259 §8.1), members the service ignores
/// included: serde_json skips an ignored string without decoding it, so
/// the check is made here, on every byte, before parsing.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("the request body is not valid UTF-8"))?;
    let text: &str = if text.bytes().all(|b| b.is_ascii_whitespace()) {
        "{}"
    } else {
        text
    };
    if text.bytes().find(|b| !b.is_ascii_whitespace()) != Some(b'{') {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
}

/// The `{id}` segment of a path, in the hyphenated UUID form (any case).
#[derive(Debug, Clone, Copy)]
pub struct PathId(pub Id);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("invalid id in path"))?;
        Id::parse_path(&raw)
            .map(PathId)
            .map_err(|_| ApiError::bad_request("invalid id in path: expected a hyphenated UUID"))
    }
}

/// Splits a query string, rejecting a known parameter given twice and
/// ignoring unknown ones (docs/protocol.md, "Request bodies").
fn query_params<'a>(
    query: Option<&str>,
    known: &[&'a str],
) -> Result<Vec<(&'a str, String)>, ApiError> {
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if let Some(k) = known.iter().find(|k| **k == name) {
            if out.iter().any(|(seen, _)| seen == k) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {k} given twice"
                )));
            }
            out.push((k, value.into_owned()));
        }
    }
    Ok(out)
}

/// A decimal integer with no sign, at most `max`.
fn parse_decimal(name: &str, text: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    let bad = || ApiError::bad_request(format!("{name} must be an integer from {min} to {max}"));
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = text.parse().map_err(|_| bad())?;
    if !(min..=max).contains(&n) {
        return Err(bad());
    }
    Ok(n)
}

fn parse_limit(text: &str) -> Result<u32, ApiError> {
    let n = parse_decimal("limit", text, 1, u64::from(LIST_LIMIT_MAX))?;
    u32::try_from(n).map_err(|_| ApiError::bad_request("limit out of range"))
}

/// `?limit=N&after=ID` of `GET /v1/wallets` (docs/protocol.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub after: Option<Id>,
}

impl ListQuery {
    /// Parses a query string: `limit` is 1 to 1000, digits only; `after` an
    /// id; a parameter given twice is rejected; unknown ones are ignored.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self {
            limit: LIST_LIMIT_DEFAULT,
            after: None,
        };
        for (name, value) in query_params(query, &["limit", "after"])? {
            match name {
                "limit" => q.limit = parse_limit(&value)?,
                _ => {
                    q.after =
                        Some(Id::parse_path(&value).map_err(|_| {
                            ApiError::bad_request("after must be a hyphenated UUID")
                        })?)
                }
            }
        }
        Ok(q)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.uri.query())
    }
}

/// `?after=SEQ&limit=N` of `GET /v1/audit`: `after` a seq (default 0),
/// `limit` 1 to 1000 (default 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditQuery {
    pub after: u64,
    pub limit: u32,
}

impl AuditQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self {
            after: 0,
            limit: LIST_LIMIT_DEFAULT,
        };
        for (name, value) in query_params(query, &["limit", "after"])? {
            match name {
                "limit" => q.limit = parse_limit(&value)?,
                _ => q.after = parse_decimal("after", &value, 0, i64::MAX as u64)?,
            }
        }
        Ok(q)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Self::parse(parts.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_rules() {
        assert_eq!(
            ListQuery::parse(None).unwrap(),
            ListQuery {
                limit: 100,
                after: None
            }
        );
        assert_eq!(
            ListQuery::parse(Some("limit=1000&x=1&x=2")).unwrap().limit,
            1000
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=+5",
            "limit=-1",
            "limit=",
            "limit=1.0",
            "limit=1&limit=2",
            "limit=99999999999999999999",
            "after=abc",
            "after=00000000000000000000000000000000",
        ] {
            assert!(ListQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        let q =
            ListQuery::parse(Some("after=0191E9B2-5C3D-7A8B-9C0D-1E2F3A4B5C6D&limit=007")).unwrap();
        assert_eq!(q.limit, 7);
        assert!(q.after.is_some());
    }

    #[test]
    fn bodies_must_be_objects() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: Option<u8>,
        }
        assert!(parse_json::<T>(b"").is_ok());
        assert!(parse_json::<T>(b"  \n").is_ok());
        assert!(parse_json::<T>(b"{\"a\": 1}").is_ok());
        assert!(parse_json::<T>(b"[1]").is_err());
        assert!(parse_json::<T>(b"null").is_err());
        assert!(parse_json::<T>(b"{\"a\": 1} {}").is_err());
        assert!(parse_json::<T>(b"{\"a\": 1, \"a\": 1}").is_err());
    }

    /// Invalid UTF-8 is refused wherever it is, in an ignored member too.
    #[test]
    fn bodies_must_be_utf8() {
        #[derive(serde::Deserialize, Debug)]
        struct T {}
        assert!(parse_json::<T>(b"{\"x\":\"ok \xc3\xa9\"}").is_ok());
        for bad in [
            &b"{\"x\":\"\xff\xfe\"}"[..],
            b"{\"x\":\"\xc3\"}",
            b"{\"x\":\"\xed\xa0\x80\"}",
            b"{\"x\":1} \xff",
        ] {
            let e = parse_json::<T>(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRequest, "{bad:?}");
        }
    }
}
