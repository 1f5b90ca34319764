//! The audit trail: one [`Trace`] per change or refusal, in the shape of Huawei Cloud
//! Trace Service (CTS) traces, kept in a hash chain.
//!
//! Each stored trace carries `seq` (gap-free, from 1), the previous trace's hash and its
//! own: `hash = SHA-256(prev_hash "\n" seq "\n" content)`, where `content` is the trace's
//! [canonical JSON](canonical_json). Altering, deleting or inserting a trace therefore
//! breaks the chain at that trace, which [`verify_chain`] names. The content is hashed as
//! stored, so an exported line (`seq`, `prev_hash`, `hash`, `trace`) can be checked on
//! its own by re-encoding `trace` canonically.

use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first trace of a chain (and of the first after a pruned prefix
/// whose seal says so).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What replaces every secret in a trace's request and response.
pub const MASK: &str = "********";

/// At most this many characters of `request` or `response` are kept (CTS's limit).
pub const BODY_LIMIT: usize = 5000;

/// `trace_rating`: normal (succeeded), warning (failed), incident (worse than a failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rating {
    Normal,
    Warning,
    Incident,
}

impl Rating {
    pub const fn as_str(self) -> &'static str {
        match self {
            Rating::Normal => "normal",
            Rating::Warning => "warning",
            Rating::Incident => "incident",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "normal" => Some(Rating::Normal),
            "warning" => Some(Rating::Warning),
            "incident" => Some(Rating::Incident),
            _ => None,
        }
    }

    /// The rating of an HTTP outcome: 2xx normal, anything else warning.
    pub fn of_status(status: u16) -> Self {
        if (200..300).contains(&status) {
            Rating::Normal
        } else {
            Rating::Warning
        }
    }
}

/// The account a user belongs to (`user.domain`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceDomain {
    pub id: String,
    pub name: String,
}

/// Who triggered the event (CTS `UserInfo`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceUser {
    pub access_key_id: String,
    pub account_id: String,
    pub domain: TraceDomain,
    pub id: String,
    pub invoked_by: Vec<String>,
    pub name: String,
    pub principal_id: String,
    /// A string, `"true"` or `"false"`, as CTS sends it.
    pub principal_is_root_user: String,
    pub principal_urn: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_name: String,
}

impl TraceUser {
    /// An IAM user of an account, with the access key used (empty for a token).
    pub fn iam(
        id: &str,
        name: &str,
        domain_id: &str,
        domain_name: &str,
        access_key_id: &str,
    ) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            user_name: name.to_owned(),
            account_id: domain_id.to_owned(),
            access_key_id: access_key_id.to_owned(),
            principal_urn: if domain_id.is_empty() {
                String::new()
            } else {
                format!("iam::{domain_id}:user:{name}")
            },
            principal_id: id.to_owned(),
            principal_is_root_user: "false".to_owned(),
            kind: "User".to_owned(),
            invoked_by: Vec::new(),
            domain: TraceDomain {
                id: domain_id.to_owned(),
                name: domain_name.to_owned(),
            },
        }
    }
}

/// One trace, with every field ListTraces returns (fields in the byte order of their
/// names, here and in [`TraceUser`] and [`TraceDomain`]: serialised as declared, the
/// trace is already in canonical form, see [`content`]) plus the fields CTS trace files carry
/// (`project_id`, `domain_id`, `tracker_name`, `user_agent`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    pub api_version: String,
    /// The HTTP status, as a string.
    pub code: String,
    pub domain_id: String,
    pub endpoint: String,
    pub enterprise_project_id: String,
    /// On failure: the error code and message; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_info: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The project the trace belongs to (ListTraces shows a project only its own).
    pub project_id: String,
    pub read_only: bool,
    /// When the trace was stored (ms, at least `time`).
    pub record_time: Millis,
    /// The request body as a JSON string, secrets masked.
    pub request: String,
    pub request_id: String,
    pub resource_id: String,
    pub resource_name: String,
    pub resource_type: String,
    pub resource_url: String,
    /// The response body as a JSON string, secrets masked.
    pub response: String,
    pub service_type: String,
    pub source_ip: String,
    /// When the request arrived (ms).
    pub time: Millis,
    pub trace_id: String,
    pub trace_name: String,
    pub trace_rating: String,
    /// `ApiCall`, `ConsoleAction` or `SystemAction`.
    pub trace_type: String,
    pub tracker_name: String,
    pub user: TraceUser,
    pub user_agent: String,
}

/// How an asynchronous job ended, for its completion trace ([`job_end`]).
#[derive(Debug, Clone, Copy)]
pub struct JobEnd<'a> {
    pub project_id: &'a str,
    pub job_id: &'a str,
    pub job_type: &'a str,
    pub status: crate::job::JobStatus,
    pub error_code: Option<&'a str>,
    pub fail_reason: Option<&'a str>,
    pub succeeded: u32,
    pub failed: u32,
    pub at: Millis,
}

/// The second trace of an asynchronous job, recorded when it ends, as Workspace records
/// one (CTS spec 7.1): the job's type as the trace name (for BatchInstallAgent the
/// request's own, `batchInstallCesAgent`), `trace_type` `SystemAction`, no source
/// address, the job's id as the resource, and the final job in `response`. Rated normal
/// when every desktop succeeded, warning otherwise (docs/audit.md).
pub fn job_end(end: &JobEnd<'_>) -> Trace {
    let user = TraceUser {
        name: SYSTEM_USER.to_owned(),
        user_name: SYSTEM_USER.to_owned(),
        kind: "SystemUser".to_owned(),
        invoked_by: vec!["service.workspace".to_owned()],
        principal_is_root_user: "false".to_owned(),
        ..TraceUser::default()
    };
    let success = end.status == crate::job::JobStatus::Success;
    let response = serde_json::json!({
        "id": end.job_id,
        "job_type": end.job_type,
        "status": end.status.as_str(),
        "end_time": end.at,
        "error_code": end.error_code,
        "fail_reason": end.fail_reason,
        "success_num": end.succeeded,
        "fail_num": end.failed,
    });
    Trace {
        trace_id: new_trace_id(),
        trace_name: end.job_type.to_owned(),
        trace_rating: if success {
            Rating::Normal
        } else {
            Rating::Warning
        }
        .as_str()
        .to_owned(),
        trace_type: "SystemAction".to_owned(),
        code: "200".to_owned(),
        time: end.at,
        record_time: end.at,
        user,
        service_type: "Workspace".to_owned(),
        resource_type: "workspace".to_owned(),
        resource_id: end.job_id.to_owned(),
        project_id: end.project_id.to_owned(),
        enterprise_project_id: "0".to_owned(),
        api_version: "v2".to_owned(),
        response: response.to_string(),
        location_info: (!success)
            .then(|| {
                let code = end.error_code.unwrap_or_default();
                let why = end.fail_reason.unwrap_or_default();
                format!("{code} {why}")
                    .trim()
                    .chars()
                    .take(300)
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty()),
        tracker_name: "system".to_owned(),
        ..Trace::default()
    }
}

/// A new trace id: a UUID, time-ordered (version 7), so that the unique index of trace ids
/// grows at its end instead of taking every new id at a random page.
pub fn new_trace_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The user of traces the server records on its own (a job's end).
pub const SYSTEM_USER: &str = "deskfleet";

/// A stored trace with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedTrace {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    pub trace: Trace,
}

/// The signed head of the chain at some `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub seq: i64,
    pub hash: String,
    pub signed_at: Millis,
    /// Hex ed25519 signature over [`Seal::message`].
    pub signature: String,
    /// Hex ed25519 public key that made it.
    pub public_key: String,
}

impl Seal {
    /// The bytes a seal signs.
    pub fn message(seq: i64, hash: &str, signed_at: Millis) -> Vec<u8> {
        format!("deskfleet-trace-seal\n{seq}\n{hash}\n{signed_at}").into_bytes()
    }
}

/// ListTraces filters, all exact matches; the window is exclusive on both ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFilter {
    pub trace_id: Option<String>,
    pub service_type: Option<String>,
    pub user: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    pub resource_type: Option<String>,
    pub trace_name: Option<String>,
    pub trace_rating: Option<String>,
    pub access_key_id: Option<String>,
    pub enterprise_project_id: Option<String>,
    /// Only traces with `time > after`.
    pub after: Millis,
    /// Only traces with `time < before`.
    pub before: Millis,
    /// Paging: only traces strictly older than this (time, trace_id) in newest-first order.
    pub older_than: Option<(Millis, String)>,
}

/// Canonical JSON: object keys sorted (by bytes), no whitespace, serde_json's escaping.
/// The hash of a trace is over this text, so any reader can recompute it.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical content of a trace, as stored and hashed. The fields are declared in
/// sorted order, so serialising the struct gives the canonical text directly (without
/// building and sorting a tree, which costs the single SQLite writer); a test holds the
/// two equal.
pub fn content(trace: &Trace) -> String {
    serde_json::to_string(trace).unwrap_or_default()
}

/// The chain hash of a trace's content at `seq` after `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: i64, content: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(content.as_bytes());
    hex::encode(h.finalize())
}

/// Keys whose values never enter a trace (compared without case, `-` and `_`).
const SECRET_KEYS: &[&str] = &[
    "password",
    "adminpass",
    "newpassword",
    "oldpassword",
    "secret",
    "sk",
    "secretkey",
    "privatekey",
    "token",
    "accesstoken",
    "enrollmenttoken",
    "xauthtoken",
    "xsubjecttoken",
    "authorization",
    "otp",
    "verificationcode",
    "credential",
    "credentials",
    "securitytoken",
    "passcode",
];

/// Whether the values of `key` are secrets.
pub fn is_secret_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_KEYS.contains(&folded.as_str())
}

/// Replaces, at any depth, the value of every secret key by [`MASK`]. A secret key whose
/// value is an object or a list (IAM's `"password": {"user": {...}}`) keeps its shape and
/// is masked inside, so the user and domain names of a login stay readable.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) && !v.is_object() && !v.is_array() {
                    *v = Value::String(MASK.to_owned());
                } else if is_secret_key(k) && v.is_array() {
                    mask_all(v);
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Masks every scalar inside `value` (a list under a secret key).
fn mask_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(mask_all),
        Value::Array(items) => items.iter_mut().for_each(mask_all),
        other => *other = Value::String(MASK.to_owned()),
    }
}

/// A body as a trace keeps it: JSON re-serialised with secrets masked, or, for a body that
/// is not JSON, a note of its size (its bytes could hold anything); at most
/// [`BODY_LIMIT`] characters.
pub fn body_text(bytes: &[u8]) -> String {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return String::new();
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut v) => {
            redact(&mut v);
            truncate(v.to_string())
        }
        Err(_) => format!("<{} bytes, not JSON>", bytes.len()),
    }
}

/// [`body_text`] of a value.
pub fn value_text(value: &Value) -> String {
    let mut v = value.clone();
    redact(&mut v);
    truncate(v.to_string())
}

fn truncate(mut s: String) -> String {
    if s.chars().count() > BODY_LIMIT {
        s = s.chars().take(BODY_LIMIT).collect();
        s.push_str("…(truncated)");
    }
    s
}

/// What is wrong with a chain, if anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainFault {
    pub seq: i64,
    pub trace_id: String,
    /// `altered`, `deleted` (a gap before `seq`), `inserted` or `mislinked`.
    pub kind: &'static str,
    pub detail: String,
}

/// Walks `traces` (in `seq` order) from `start_prev` (the hash the first one must follow)
/// and `start_seq` (the seq it must have); returns the first fault, if any, and the last
/// hash seen.
///
/// `stored_content` is the stored canonical text of each trace (`None`: recompute it).
pub fn verify_chain<'a>(
    traces: impl IntoIterator<Item = (&'a ChainedTrace, Option<&'a str>)>,
    start_prev: &str,
    start_seq: i64,
) -> (Option<ChainFault>, String) {
    let mut prev = start_prev.to_owned();
    for (expect_seq, (t, stored)) in (start_seq..).zip(traces) {
        let recomputed = content(&t.trace);
        let text = stored.unwrap_or(&recomputed);
        let fault = |kind: &'static str, detail: String| ChainFault {
            seq: t.seq,
            trace_id: t.trace.trace_id.clone(),
            kind,
            detail,
        };
        if t.seq > expect_seq {
            return (
                Some(fault(
                    "deleted",
                    format!(
                        "traces {expect_seq}..{} are missing before this one",
                        t.seq - 1
                    ),
                )),
                prev,
            );
        }
        if t.seq < expect_seq {
            return (
                Some(fault("inserted", format!("seq {} repeats", t.seq))),
                prev,
            );
        }
        if chain_hash(&t.prev_hash, t.seq, text) != t.hash || text != recomputed {
            return (
                Some(fault(
                    "altered",
                    "its content does not match its hash".to_owned(),
                )),
                prev,
            );
        }
        if t.prev_hash != prev {
            // A self-consistent trace that does not follow its predecessor was put there
            // (inserted), or its predecessor was removed and the rest renumbered.
            return (
                Some(fault(
                    "inserted",
                    "its prev_hash is not the hash of the trace before it".to_owned(),
                )),
                prev,
            );
        }
        prev = t.hash.clone();
    }
    (None, prev)
}

/// What [`verify_store`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Traces walked.
    pub checked: u64,
    /// The first trace altered, deleted or inserted, if any.
    pub fault: Option<ChainFault>,
    /// Seals whose hash is not the hash of the trace at their `seq` (or whose trace is
    /// gone without being pruned): `seq` of each.
    pub broken_seals: Vec<i64>,
    /// Whether a seal vouches for the start of the kept chain (always true when nothing
    /// was pruned).
    pub start_sealed: bool,
    /// Whether the recorded head is the last trace (a removed tail shows here).
    pub head_matches: bool,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.fault.is_none()
            && self.broken_seals.is_empty()
            && self.start_sealed
            && self.head_matches
    }
}

/// How many traces [`verify_store`] reads at a time.
const VERIFY_PAGE: u32 = 1000;

/// Walks the whole stored chain: content against hash, link against the previous trace,
/// filter columns against content, seals against the traces they name, and the head.
/// Signatures of seals are checked by the caller, which holds the public key.
pub async fn verify_store(
    store: &dyn crate::store::Store,
) -> crate::store::StoreResult<Verification> {
    // Traces recorded but not chained yet are chained first: verify covers every trace
    // committed before it started.
    while store.chain_traces(VERIFY_PAGE).await? == u64::from(VERIFY_PAGE) {}
    let head = store.trace_head().await?;
    let seals = store.list_seals().await?;
    let mut v = Verification {
        start_sealed: head.pruned_seq == 0
            || seals
                .iter()
                .any(|s| s.seq == head.pruned_seq && s.hash == head.pruned_hash),
        ..Verification::default()
    };
    let mut prev = head.pruned_hash.clone();
    let mut next_seq = head.pruned_seq + 1;
    let mut hashes: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    hashes.insert(head.pruned_seq, head.pruned_hash.clone());
    let mut from = next_seq;
    loop {
        let page = store.trace_chain(from, VERIFY_PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for stored in &page {
            v.checked += 1;
            hashes.insert(stored.seq, stored.hash.clone());
            if v.fault.is_some() {
                continue;
            }
            let trace: Trace = match serde_json::from_str(&stored.content) {
                Ok(t) => t,
                Err(e) => {
                    v.fault = Some(ChainFault {
                        seq: stored.seq,
                        trace_id: String::new(),
                        kind: "altered",
                        detail: format!("its content does not decode: {e}"),
                    });
                    continue;
                }
            };
            if let Some((col, value)) = stored
                .columns
                .iter()
                .find(|(col, value)| column_of(&trace, col) != *value)
            {
                v.fault = Some(ChainFault {
                    seq: stored.seq,
                    trace_id: trace.trace_id.clone(),
                    kind: "altered",
                    detail: format!("its {col} column ({value:?}) is not what it recorded"),
                });
                continue;
            }
            let chained = ChainedTrace {
                seq: stored.seq,
                prev_hash: stored.prev_hash.clone(),
                hash: stored.hash.clone(),
                trace,
            };
            let (fault, last) =
                verify_chain([(&chained, Some(stored.content.as_str()))], &prev, next_seq);
            v.fault = fault;
            prev = last;
            next_seq += 1;
        }
    }
    let walked_to = next_seq - 1;
    v.head_matches = head.seq == walked_to && (v.fault.is_some() || head.hash == prev);
    if v.fault.is_none() && !v.head_matches {
        v.fault = Some(if walked_to > head.seq {
            ChainFault {
                seq: head.seq + 1,
                trace_id: String::new(),
                kind: "inserted",
                detail: format!(
                    "the head is at {} but the chain goes on to {walked_to}: traces were added \
                     outside the server",
                    head.seq
                ),
            }
        } else {
            ChainFault {
                seq: walked_to + 1,
                trace_id: String::new(),
                kind: "deleted",
                detail: format!(
                    "the chain ends at {walked_to} but its head says {}: the last traces were \
                     removed",
                    head.seq
                ),
            }
        });
    }
    v.broken_seals = seals
        .iter()
        .filter(|s| s.seq >= head.pruned_seq)
        .filter(|s| hashes.get(&s.seq) != Some(&s.hash))
        .map(|s| s.seq)
        .collect();
    Ok(v)
}

/// A trace's value of a filter column, as text.
fn column_of(t: &Trace, col: &str) -> String {
    match col {
        "trace_id" => t.trace_id.clone(),
        "project_id" => t.project_id.clone(),
        "time" => t.time.to_string(),
        "trace_name" => t.trace_name.clone(),
        "trace_rating" => t.trace_rating.clone(),
        "service_type" => t.service_type.clone(),
        "resource_type" => t.resource_type.clone(),
        "resource_id" => t.resource_id.clone(),
        "resource_name" => t.resource_name.clone(),
        "user" => t.user.name.clone(),
        "access_key_id" => t.user.access_key_id.clone(),
        "enterprise_project_id" => t.enterprise_project_id.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<ChainedTrace> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let trace = Trace {
                    trace_id: format!("t{seq}"),
                    trace_name: "batchInstallCesAgent".into(),
                    time: seq,
                    ..Trace::default()
                };
                let hash = chain_hash(&prev, seq, &content(&trace));
                let t = ChainedTrace {
                    seq,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                    trace,
                };
                prev = hash;
                t
            })
            .collect()
    }

    fn check(c: &[ChainedTrace]) -> Option<ChainFault> {
        verify_chain(c.iter().map(|t| (t, None)), GENESIS_HASH, 1).0
    }

    #[test]
    fn a_clean_chain_verifies_and_each_tampering_is_named() {
        let clean = chain(5);
        assert_eq!(check(&clean), None);

        let mut altered = clean.clone();
        altered[2].trace.resource_id = "other".into();
        let f = check(&altered).unwrap();
        assert_eq!((f.seq, f.kind), (3, "altered"));

        let mut deleted = clean.clone();
        deleted.remove(1);
        let f = check(&deleted).unwrap();
        assert_eq!((f.seq, f.kind), (3, "deleted"));

        // A forged trace that hashes correctly but does not follow the chain.
        let mut inserted = clean.clone();
        let mut forged = clean[2].clone();
        forged.trace.trace_id = "forged".into();
        forged.prev_hash = GENESIS_HASH.into();
        forged.hash = chain_hash(GENESIS_HASH, 3, &content(&forged.trace));
        inserted[2] = forged;
        let f = check(&inserted).unwrap();
        assert_eq!((f.seq, f.kind), (3, "inserted"));
    }

    #[test]
    fn secrets_are_masked_at_any_depth_by_key_name() {
        let mut v = json!({
            "auth": {"identity": {"password": {"user": {"name": "u", "password": "hunter2"}}}},
            "remote_install_meta": [{"password": "p1", "user": "root"}],
            "Secret_Key": "sk", "X-Auth-Token": "tok", "desktop_ids": ["a"],
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["hunter2", "p1", "\"sk\"", "tok"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("\"desktop_ids\":[\"a\"]"));
        assert!(text.contains("\"user\":\"root\""));
    }

    #[test]
    fn a_trace_serialises_in_canonical_form() {
        let mut t = Trace {
            trace_id: "t\u{e9}\"1".into(),
            location_info: Some("WKS.0001 bad".into()),
            operation_id: Some("BatchInstallAgent".into()),
            request: r#"{"desktop_ids":["a"]}"#.into(),
            time: 1_700_000_000_000,
            read_only: true,
            user: TraceUser::iam("u", "ops", "d", "acme", "AK"),
            ..Trace::default()
        };
        t.user.invoked_by = vec!["x".into()];
        let tree = serde_json::to_value(&t).unwrap();
        assert_eq!(content(&t), canonical_json(&tree));
        t.location_info = None;
        let tree = serde_json::to_value(&t).unwrap();
        assert_eq!(content(&t), canonical_json(&tree));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": "é"}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"z":[1,{"x":"é","y":2}]},"b":1}"#
        );
    }
}
