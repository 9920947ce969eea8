#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::io::BufRead;

use kms_crypto::audit::{record_hash, verify_chain, ChainError};
use kms_protocol::audit::{AuditPage, AuditRecord, Digest32};
use kms_protocol::P256PublicKey;

/// The outcome of verifying an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every record verified: how many, and the hash of the last.
    Ok {
        records: usize,
        last_seq: u64,
        head: Option<Digest32>,
    },
    /// The first bad record.
    Bad(ChainError),
}

/// Reads JSON lines of audit records; a line that is not a record ends the
/// list with its position, which the verifier reports as the first bad one.
pub fn read_records(input: impl BufRead) -> (Vec<AuditRecord>, Option<(usize, String)>) {
    let mut records = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return (records, Some((i + 1, format!("unreadable: {e}")))),
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<AuditRecord>(&line) {
            Ok(r) => records.push(r),
            Err(e) => {
                let position = records.len() + 1;
                return (
                    records,
                    Some((position, format!("not an audit record: {e}"))),
                );
            }
        }
    }
    (records, None)
}

/// Verifies a full export: seq from 1 without gaps, every hash link, every signature.
pub fn verify(
    records: &[AuditRecord],
    unparsable: Option<(usize, String)>,
    identity: &P256PublicKey,
) -> Verdict {
    if let Err(e) = verify_chain(records, identity, None, true) {
        return Verdict::Bad(e);
    }
    if let Some((position, _)) = unparsable {
        return Verdict::Bad(ChainError {
            position,
            seq: records.last().map(|r| r.seq + 1).unwrap_or(1),
            reason: "not an audit record",
        });
    }
    Verdict::Ok {
        records: records.len(),
        last_seq: records.last().map(|r| r.seq).unwrap_or(0),
        head: records.last().map(record_hash),
    }
}

/// Pages through `GET /v1/audit` and returns every record.
pub async fn fetch_all(api_url: &str) -> anyhow::Result<Vec<AuditRecord>> {
    let http = reqwest::Client::new();
    let base = api_url.trim_end_matches('/');
    let mut after = 0u64;
    let mut out = Vec::new();
    loop {
        let resp = http
            .get(format!("{base}/v1/audit?after={after}&limit=1000"))
            .send()
            .await?
            .error_for_status()?;
        let page: AuditPage = resp.json().await?;
        out.extend(page.records);
        match page.next {
            Some(n) => after = n,
            None => return Ok(out),
        }
    }
}
