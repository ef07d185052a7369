//! WebSocket sessions (contract §3): token auth on upgrade, JSON or
//! MessagePack by subprotocol, welcome, snapshot or replay, live events,
//! requests answered with `ok`/`error`.
//!
//! Each session has a bounded outgoing queue fed by its agent actor; a session
//! that falls behind is dropped by the actor (never slowing anyone else) and
//! can come back with `resume_from`.

use std::sync::Arc;

use actors::agent::SessionHandle;
use actors::conversation::RequestKind;
use actors::shared::Principal;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use protocol::codec::Encoding;
use protocol::model::Conversation;
use protocol::ws::{ClientFrame, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, ServerFrame};
use protocol::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::http::error_response;
use crate::server::AppState;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
    resume_from: Option<u64>,
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let principal = match state.tokens.authenticate(&headers, query.token.as_deref()) {
        Ok(principal) => principal,
        Err(error) => return error_response(error),
    };
    if state.system().is_none() {
        return error_response(ApiError::unavailable("the engine is still starting; reconnect shortly"));
    }
    upgrade
        .protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            let encoding = socket
                .protocol()
                .and_then(|value| value.to_str().ok())
                .and_then(|name| Encoding::from_subprotocol(Some(name)))
                .unwrap_or(Encoding::Json);
            run_session(state, socket, principal, encoding, query.resume_from).await;
        })
}

fn encode(encoding: Encoding, frame: &ServerFrame) -> Option<WsMessage> {
    match encoding.encode(frame) {
        Ok(bytes) => Some(match encoding {
            Encoding::Json => WsMessage::Text(String::from_utf8(bytes).unwrap_or_default().into()),
            Encoding::MsgPack => WsMessage::Binary(bytes.into()),
        }),
        Err(error) => {
            tracing::error!(%error, "cannot encode a frame");
            None
        }
    }
}

async fn run_session(
    state: Arc<AppState>,
    socket: WebSocket,
    principal: Principal,
    encoding: Encoding,
    resume_from: Option<u64>,
) {
    let Some(system) = state.system().cloned() else { return };
    let (mut sink, mut stream) = socket.split();
    let session_id = format!("s{:016x}", rand::random::<u64>());
    let (events_tx, mut events) = mpsc::channel(system.settings().session_queue.max(16));
    let handle = SessionHandle { session_id: session_id.clone(), sender: events_tx };
    // Attach before reading the snapshot, so no event falls between the two:
    // events already in the snapshot are skipped by their seq.
    let status = match system.attach(&principal.agent_id, handle).await {
        Ok(status) => status,
        Err(error) => {
            if let Some(message) = encode(encoding, &ServerFrame::error(None, error)) {
                let _ = sink.send(message).await;
            }
            return;
        }
    };
    let welcome = ServerFrame::Welcome {
        agent_id: principal.agent_id.clone(),
        role: principal.role,
        session_id: session_id.clone(),
        server_time: system.now(),
        status,
    };
    // The snapshot reads ranges: first let the store's tables catch up with
    // its journal (usually they have), without blocking a runtime thread.
    // While the store cannot write (a full disk) that refuses at once: the
    // client hears `unavailable` and reconnects later.
    let opening = match system.reader().caught_up().await {
        Ok(reader) => opening_frames(&reader, &principal, resume_from),
        Err(error) => Err(error),
    };
    let (start_seq, opening) = match opening {
        Ok(opening) => opening,
        Err(error) => {
            tracing::error!(%error, "cannot read the session's snapshot");
            system.detach(&principal.agent_id, &session_id);
            let refusal = ApiError::unavailable("the store cannot be read right now; reconnect shortly");
            if let Some(message) = encode(encoding, &ServerFrame::error(None, refusal)) {
                let _ = sink.send(message).await;
            }
            return;
        }
    };
    for frame in std::iter::once(welcome).chain(opening) {
        if let Some(message) = encode(encoding, &frame)
            && sink.send(message).await.is_err()
        {
            system.detach(&principal.agent_id, &session_id);
            return;
        }
    }
    // Boxed: an unbounded channel allocates its first block of 32 slots at
    // once, and a bare ServerFrame is ~400 bytes — 12 KB per idle session.
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<Box<ServerFrame>>();
    let mut stopping = state.stopping.clone();
    let stop_signal = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    tokio::pin!(stop_signal);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(frame) = event else {
                    // The agent actor dropped this session (too slow, or restarting).
                    let _ = sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1013,
                        reason: "fell behind; reconnect with resume_from".into(),
                    }))).await;
                    break;
                };
                if frame.seq().is_some_and(|seq| seq <= start_seq) {
                    continue;
                }
                if let Some(message) = encode(encoding, &frame)
                    && sink.send(message).await.is_err()
                {
                    break;
                }
            }
            reply = replies.recv() => {
                if let Some(frame) = reply
                    && let Some(message) = encode(encoding, &frame)
                    && sink.send(message).await.is_err()
                {
                    break;
                }
            }
            incoming = stream.next() => {
                let bytes = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(WsMessage::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => continue,
                };
                let decoded: Result<ClientFrame, _> = if bytes.first() == Some(&b'{') {
                    Encoding::Json.decode(&bytes)
                } else {
                    Encoding::MsgPack.decode(&bytes)
                };
                match decoded {
                    Ok(ClientFrame::Subscribe { id, topic }) => {
                        let answer = subscribe(&system, &principal, &topic, replies_tx.clone());
                        let frame = match answer {
                            Ok(()) => ServerFrame::ok(id, Map::new()),
                            Err(error) => ServerFrame::error(id, error),
                        };
                        let _ = replies_tx.send(Box::new(frame));
                        if matches!(topic.as_str(), "workload") && principal.role.sees_everything() {
                            let workload = system.workload().await;
                            let _ = replies_tx.send(Box::new(ServerFrame::Workload(workload)));
                        }
                    }
                    Ok(frame) => {
                        let system = system.clone();
                        let principal = principal.clone();
                        let replies_tx = replies_tx.clone();
                        tokio::spawn(async move {
                            let id = frame.id().cloned();
                            let answer = match handle_request(&system, &principal, frame).await {
                                Ok(body) => ServerFrame::ok(id, body),
                                Err(error) => ServerFrame::error(id, error),
                            };
                            let _ = replies_tx.send(Box::new(answer));
                        });
                    }
                    Err(error) => {
                        let id = serde_json::from_slice::<Value>(&bytes).ok().and_then(|value| value.get("id").cloned());
                        let error = ApiError::bad_request(format!("cannot read that frame: {error}"));
                        if let Some(message) = encode(encoding, &ServerFrame::error(id, error))
                            && sink.send(message).await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            () = &mut stop_signal => {
                let _ = sink.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1001,
                    reason: "server shutting down".into(),
                }))).await;
                break;
            }
        }
    }
    system.detach(&principal.agent_id, &session_id);
}

/// The snapshot, or the replay of events after `resume_from` when they are
/// all still held. Returns the seq the live stream continues after.
fn opening_frames(
    reader: &storage::Reader,
    principal: &Principal,
    resume_from: Option<u64>,
) -> Result<(u64, Vec<ServerFrame>), storage::StorageError> {
    if let Some(after) = resume_from
        && let Some((last_seq, events)) = reader.agent_events_after(&principal.agent_id, after)?
    {
        return Ok((last_seq, events));
    }
    let (seq, conversations) = if principal.role.sees_everything() {
        (reader.agent(&principal.agent_id)?.last_seq, Vec::new())
    } else {
        let (seq, held) = reader.agent_snapshot(&principal.agent_id)?;
        let conversations: Vec<Conversation> = held
            .into_iter()
            .map(|(record, messages)| {
                let mut conversation = record.conversation;
                conversation.messages = Some(messages.into_iter().map(|stored| stored.message).collect());
                conversation
            })
            .collect();
        (seq, conversations)
    };
    Ok((seq, vec![ServerFrame::Snapshot { seq, conversations }]))
}

async fn handle_request(
    system: &actors::System,
    principal: &Principal,
    frame: ClientFrame,
) -> Result<Map<String, Value>, ApiError> {
    let conversation = |conversation_id: String, kind: RequestKind| async move {
        system.request(principal.clone(), &conversation_id, kind).await
    };
    match frame {
        ClientFrame::SetStatus { status, .. } => {
            let status = system.set_status(&principal.agent_id, status).await?;
            Ok(object(json!({ "status": status })))
        }
        ClientFrame::Send { conversation_id, text, .. } => {
            conversation(conversation_id, RequestKind::Send { text }).await
        }
        ClientFrame::SendTemplate { conversation_id, template, .. } => {
            conversation(conversation_id, RequestKind::SendTemplate { template }).await
        }
        ClientFrame::SetFields { conversation_id, fields, .. } => {
            conversation(conversation_id, RequestKind::SetFields { fields }).await
        }
        ClientFrame::Close { conversation_id, fields, .. } => {
            conversation(conversation_id, RequestKind::Close { fields }).await
        }
        ClientFrame::Transfer { conversation_id, team, agent, .. } => {
            conversation(conversation_id, RequestKind::Transfer { team, agent }).await
        }
        ClientFrame::Subscribe { .. } => unreachable!("handled in the session loop"),
    }
}

/// Starts a workload feed for a manager: a frame every second while the
/// session lives (the first is sent right after the `ok`).
fn subscribe(
    system: &Arc<actors::System>,
    principal: &Principal,
    topic: &str,
    replies: mpsc::UnboundedSender<Box<ServerFrame>>,
) -> Result<(), ApiError> {
    if topic != "workload" {
        return Err(ApiError::bad_request(format!("unknown topic {topic:?}; the only topic is \"workload\"")));
    }
    if !principal.role.sees_everything() {
        return Err(ApiError::new(ErrorCode::Forbidden, "the workload feed is for managers and admins"));
    }
    let system = system.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
        interval.tick().await;
        loop {
            interval.tick().await;
            if replies.is_closed() {
                break;
            }
            let workload = system.workload().await;
            if replies.send(Box::new(ServerFrame::Workload(workload))).is_err() {
                break;
            }
        }
    });
    Ok(())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
