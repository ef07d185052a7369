//! The audit log's endpoints (PROTOCOL §5, §9), for managers and admins:
//! the trail as JSON lines or CSV, whole-log verification, signed
//! checkpoints, the public key, inclusion and consistency proofs. Each
//! answer first lets the audit log catch up with every event committed
//! before the request, so what a client just did is in it.

use std::collections::HashMap;
use std::sync::Arc;

use audit::encoding::encode_hex;
use audit::entry::Entry;
use audit::export::InclusionProofRecord;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use protocol::time::{UnixMs, parse_rfc3339};
use protocol::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::json;
use storage::Reader;
use storage::audit::AuditSnapshot;

use crate::audit::{AuditLog, StoredTree, agents_named, entry_line, latest_checkpoint, parse_entry};
use crate::http::{error_response, parse_query};
use crate::server::AppState;

/// Most entries one page of `GET /api/v1/audit` returns.
pub const MAX_PAGE: usize = 10_000;
const DEFAULT_PAGE: usize = 1_000;
/// The header naming the `after` of the next page, when there may be one.
pub const NEXT_AFTER_HEADER: &str = "x-next-after";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/audit", get(trail))
        .route("/api/v1/audit/verify", get(verify))
        .route("/api/v1/audit/checkpoint", get(checkpoint))
        .route("/api/v1/audit/key", get(key))
        .route("/api/v1/audit/proof", get(proof))
        .route("/api/v1/audit/consistency", get(consistency))
}

/// A manager or admin, with the teams it is limited to (empty: all).
struct Auditor {
    manages: Vec<String>,
}

fn auditor(state: &AppState, headers: &HeaderMap) -> Result<Auditor, ApiError> {
    let principal = crate::http::principal(state, headers)?;
    if !principal.role.sees_everything() {
        return Err(ApiError::forbidden("the audit log is for managers and admins"));
    }
    let manages = state.system().map(|system| system.manages(&principal.agent_id)).unwrap_or_default();
    Ok(Auditor { manages })
}

fn audit_log(state: &AppState) -> Result<&Arc<AuditLog>, ApiError> {
    state.audit.get().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))
}

fn unavailable(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "the audit log could not answer");
    ApiError::unavailable("the audit log cannot be read right now; try again")
}

/// The audit log caught up with every event committed so far, and a reader
/// whose snapshot holds it.
async fn caught_up(state: &AppState) -> Result<(Arc<AuditLog>, Reader), ApiError> {
    let audit = audit_log(state)?.clone();
    let system = state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))?;
    audit.sync().await.map_err(unavailable)?;
    let reader = system.reader().caught_up().await.map_err(unavailable)?;
    Ok((audit, reader))
}

/// Runs a read of the audit tables off the async threads.
async fn blocking<T: Send + 'static>(
    reader: Reader,
    read: impl FnOnce(&Reader, &AuditSnapshot) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let snapshot = reader.audit().map_err(unavailable)?;
        read(&reader, &snapshot)
    })
    .await
    .map_err(unavailable)?
}

#[derive(Deserialize)]
struct TrailQuery {
    contact: Option<String>,
    agent: Option<String>,
    conversation: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
    format: Option<String>,
}

/// What a trail request selects.
struct Selection {
    contact: Option<String>,
    agent: Option<String>,
    conversation: Option<String>,
    from: Option<UnixMs>,
    to: Option<UnixMs>,
    after: u64,
    limit: usize,
    manages: Vec<String>,
}

fn time(name: &str, text: Option<&str>) -> Result<Option<UnixMs>, ApiError> {
    match text.filter(|text| !text.is_empty()) {
        None => Ok(None),
        Some(text) => parse_rfc3339(text).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be an RFC 3339 time like 2026-11-24T10:00:00.000Z, not {text:?}"
            ))
        }),
    }
}

/// One page of the trail: the entries selected (with their stored hash and
/// canonical bytes), and whether more may follow.
fn select(reader: &Reader, snapshot: &AuditSnapshot, selection: &Selection) -> Result<(Vec<Page>, bool), ApiError> {
    let store = |error: storage::StorageError| unavailable(error);
    let mut teams: HashMap<String, bool> = HashMap::new();
    let mut in_teams = |conversation: Option<&str>| -> Result<bool, ApiError> {
        if selection.manages.is_empty() {
            return Ok(true);
        }
        let Some(conversation) = conversation else { return Ok(false) };
        if let Some(known) = teams.get(conversation) {
            return Ok(*known);
        }
        let team = reader.conversation(conversation).map_err(store)?.and_then(|record| record.conversation.team);
        let allowed = team.is_some_and(|team| selection.manages.contains(&team));
        teams.insert(conversation.to_owned(), allowed);
        Ok(allowed)
    };
    let mut page = Vec::new();
    let mut consider = |n: u64, hash: &[u8; 32], at: UnixMs, canonical: &[u8]| -> Result<bool, ApiError> {
        if selection.from.is_some_and(|from| at < from) || selection.to.is_some_and(|to| at > to) {
            return Ok(true);
        }
        let entry = parse_entry(hash, canonical).map_err(unavailable)?;
        let wanted = selection.contact.as_ref().is_none_or(|contact| entry.contact.as_ref() == Some(contact))
            && selection.conversation.as_ref().is_none_or(|id| entry.conversation_id.as_ref() == Some(id))
            && selection.agent.as_deref().is_none_or(|agent| agents_named(&entry.actor, &entry.data).contains(&agent))
            && in_teams(entry.conversation_id.as_deref())?;
        if wanted {
            page.push(Page { n, line: entry_line(hash, canonical), entry });
        }
        Ok(page.len() < selection.limit)
    };
    // A conversation's entries are found through its contact's.
    let contact_of_conversation = match (&selection.contact, &selection.conversation) {
        (None, Some(id)) => match reader.conversation(id).map_err(store)? {
            Some(record) => Some(record.conversation.contact.wa_id),
            None => return Ok((Vec::new(), false)),
        },
        _ => None,
    };
    let index = selection
        .contact
        .clone()
        .or(contact_of_conversation)
        .map(|contact| format!("c:{contact}"))
        .or_else(|| selection.agent.as_ref().map(|agent| format!("a:{agent}")));
    // The walk stops at a full page (there is more) or at a failure.
    let stopped = std::cell::Cell::new(false);
    let failure = std::cell::Cell::new(None);
    let mut visit = |n: u64, hash: &[u8; 32], at: UnixMs, canonical: &[u8]| {
        let go_on = consider(n, hash, at, canonical).unwrap_or_else(|error| {
            failure.set(Some(error));
            false
        });
        stopped.set(!go_on);
        Ok(go_on)
    };
    match index {
        Some(key) => {
            let mut from = selection.after.saturating_add(1);
            while !stopped.get() {
                let numbers = snapshot.indexed(&key, from, 4096).map_err(store)?;
                let Some(&last) = numbers.last() else { break };
                snapshot.visit_entries(&numbers, &mut visit).map_err(store)?;
                from = last + 1;
            }
        }
        None => snapshot.scan(selection.after.saturating_add(1), &mut visit).map_err(store)?,
    }
    if let Some(error) = failure.into_inner() {
        return Err(error);
    }
    Ok((page, stopped.get()))
}

struct Page {
    n: u64,
    line: Vec<u8>,
    entry: Entry,
}

/// `GET /api/v1/audit`: JSON lines (default) or `format=csv`.
async fn trail(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = async {
        let auditor = auditor(&state, &headers)?;
        let query: TrailQuery = parse_query(&uri)?;
        let csv = match query.format.as_deref() {
            None | Some("") | Some("jsonl") | Some("json") => false,
            Some("csv") => true,
            Some(other) => return Err(ApiError::bad_request(format!("`format` must be csv or jsonl, not {other:?}"))),
        };
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::bad_request(format!("`limit` must be between 1 and {MAX_PAGE}")));
        }
        let nonempty = |value: Option<String>| value.filter(|value| !value.is_empty());
        let selection = Selection {
            from: time("from", query.from.as_deref())?,
            to: time("to", query.to.as_deref())?,
            contact: nonempty(query.contact),
            agent: nonempty(query.agent),
            conversation: nonempty(query.conversation),
            after: query.after.unwrap_or(0),
            limit,
            manages: auditor.manages,
        };
        let (_, reader) = caught_up(&state).await?;
        let (page, more) = blocking(reader, move |reader, snapshot| select(reader, snapshot, &selection)).await?;
        let mut response = if csv { csv_body(&page)?.into_response() } else { json_lines(&page) };
        if more && let Some(last) = page.last() {
            response.headers_mut().insert(NEXT_AFTER_HEADER, HeaderValue::from(last.n));
        }
        Ok(response)
    }
    .await;
    answer.unwrap_or_else(error_response)
}

fn json_lines(page: &[Page]) -> Response {
    let mut body = Vec::with_capacity(page.iter().map(|entry| entry.line.len() + 1).sum());
    for entry in page {
        body.extend_from_slice(&entry.line);
        body.push(b'\n');
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn csv_body(page: &[Page]) -> Result<impl IntoResponse, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |error: csv::Error| unavailable(error);
    writer
        .write_record(["n", "at", "actor", "action", "contact", "conversation_id", "data", "prev", "hash"])
        .map_err(failed)?;
    for Page { entry, .. } in page {
        let data = serde_json::to_string(&entry.data).unwrap_or_default();
        writer
            .write_record([
                entry.n.to_string().as_str(),
                &entry.at,
                &entry.actor,
                &entry.action,
                entry.contact.as_deref().unwrap_or(""),
                entry.conversation_id.as_deref().unwrap_or(""),
                &data,
                &entry.prev,
                &entry.hash,
            ])
            .map_err(failed)?;
    }
    let body = writer.into_inner().map_err(|error| unavailable(error.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body))
}

/// `GET /api/v1/audit/verify` → `{ok, entries, head}`.
async fn verify(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = async {
        auditor(&state, &headers)?;
        let (audit, reader) = caught_up(&state).await?;
        let key = *audit.public_key();
        let verdict = blocking(reader, move |_, snapshot| {
            let size = snapshot.size().map_err(unavailable)?;
            let verified = crate::audit::verify(snapshot, &key).map_err(unavailable)?;
            Ok(verified.to_json(size))
        })
        .await?;
        if verdict["ok"] != json!(true) {
            tracing::error!(verdict = %verdict, "the audit log does not verify");
        }
        Ok(Json(verdict).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

/// `GET /api/v1/audit/checkpoint`: a signed checkpoint covering every
/// event committed before the request.
async fn checkpoint(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = async {
        auditor(&state, &headers)?;
        let checkpoint = audit_log(&state)?.checkpoint().await.map_err(unavailable)?;
        Ok(Json(checkpoint).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

/// `GET /api/v1/audit/key`: the public key checkpoints verify with.
async fn key(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let answer = (|| {
        auditor(&state, &headers)?;
        let key = audit_log(&state)?.public_key();
        Ok(Json(json!({ "algorithm": "ed25519", "public_key": key.to_hex(), "key_id": key.key_id() })).into_response())
    })();
    answer.unwrap_or_else(error_response)
}

#[derive(Deserialize)]
struct ProofQuery {
    n: Option<u64>,
    tree_size: Option<u64>,
}

/// `GET /api/v1/audit/proof?n=N&tree_size=S`: entry n's inclusion proof in
/// the tree of S entries (S defaults to the latest checkpoint's size).
async fn proof(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = async {
        auditor(&state, &headers)?;
        let query: ProofQuery = parse_query(&uri)?;
        let n = query
            .n
            .filter(|n| *n >= 1)
            .ok_or_else(|| ApiError::bad_request("`n` (an entry number, from 1) is required"))?;
        let (_, reader) = caught_up(&state).await?;
        let record = blocking(reader, move |_, snapshot| {
            let size = snapshot.size().map_err(unavailable)?;
            let tree_size = match query.tree_size {
                Some(tree_size) => tree_size,
                None => latest_checkpoint(snapshot).map_err(unavailable)?.map_or(size, |latest| latest.tree_size),
            };
            if tree_size > size {
                return Err(ApiError::bad_request(format!(
                    "`tree_size` {tree_size} is beyond the {size} entries of the log"
                )));
            }
            if n > tree_size {
                return Err(ApiError::bad_request(format!("entry {n} is not in a tree of {tree_size} entries")));
            }
            let hash = snapshot
                .entry_hash(n)
                .map_err(unavailable)?
                .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no audit entry {n}")))?;
            InclusionProofRecord::generate(&StoredTree { snapshot, size }, n, &hash, tree_size).map_err(unavailable)
        })
        .await?;
        Ok(Json(record).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: Option<u64>,
    to: Option<u64>,
}

/// `GET /api/v1/audit/consistency?from=S1&to=S2` → `{path}`: the tree of S1
/// entries is a prefix of the tree of S2.
async fn consistency(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Response {
    let answer = async {
        auditor(&state, &headers)?;
        let query: ConsistencyQuery = parse_query(&uri)?;
        let (Some(from), Some(to)) = (query.from, query.to) else {
            return Err(ApiError::bad_request("`from` and `to` (two tree sizes) are required"));
        };
        if from > to {
            return Err(ApiError::bad_request(format!("`from` ({from}) must not be larger than `to` ({to})")));
        }
        let (_, reader) = caught_up(&state).await?;
        let path = blocking(reader, move |_, snapshot| {
            let size = snapshot.size().map_err(unavailable)?;
            if to > size {
                return Err(ApiError::bad_request(format!("`to` {to} is beyond the {size} entries of the log")));
            }
            audit::merkle::consistency_proof(&StoredTree { snapshot, size }, from, to).map_err(unavailable)
        })
        .await?;
        Ok(Json(json!({ "path": path.iter().map(|hash| encode_hex(hash)).collect::<Vec<_>>() })).into_response())
    }
    .await;
    answer.unwrap_or_else(error_response)
}
