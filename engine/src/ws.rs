//! WebSocket sessions (contract §3): token auth on upgrade, JSON or
//! MessagePack by subprotocol, welcome, snapshot or replay, live events,
//! requests answered with `ok`/`error`.
//!
//! Every queue of a session is bounded: events come through a channel of
//! `engine.session_queue` fed by the agent actor (which drops a session that
//! falls behind, never slowing anyone else); answers through one of
//! `server.ws_requests_in_flight` (past it the session reads no more requests
//! until one is answered); the workload feed is a timer of the session loop,
//! one per session however often it subscribes. A frame the client does not
//! take within `server.ws_write_timeout_ms` ends the session and resets its
//! connection. A dropped client can come back with `resume_from`.

use std::sync::Arc;
use std::time::Duration;

use actors::agent::SessionHandle;
use actors::conversation::RequestKind;
use actors::shared::Principal;
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use protocol::codec::Encoding;
use protocol::model::Conversation;
use protocol::ws::{ClientFrame, SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, ServerFrame};
use protocol::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::http::{error_response, parse_query};
use crate::serve::ConnectionControl;
use crate::server::AppState;

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct WsQuery {
    resume_from: Option<u64>,
}

/// Checked in this order: the token, the query, the upgrade itself.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    control: Option<Extension<ConnectionControl>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Only `token` is read before authentication; a malformed query is
    // reported once the caller is known.
    let token = parse_query::<TokenQuery>(&uri).ok().and_then(|query| query.token);
    let principal = match crate::auth::authenticate(&state, &headers, token.as_deref()) {
        Ok(principal) => principal,
        Err(error) => return error_response(error),
    };
    // Kept as its digest: a session ends when its token stops being valid.
    let token_digest = crate::auth::bearer(&headers).or(token.as_deref()).map(actors::token_digest).unwrap_or_default();
    let query: WsQuery = match parse_query(&uri) {
        Ok(query) => query,
        Err(error) => return error_response(error),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return error_response(ApiError::bad_request(format!(
                "GET /ws must be a WebSocket upgrade: {}",
                rejection.body_text()
            )));
        }
    };
    if state.system().is_none() {
        return error_response(ApiError::unavailable("the engine is still starting; reconnect shortly"));
    }
    let max_message = state.config.server.ws_max_message_bytes;
    let control = control.map(|Extension(control)| control).unwrap_or_default();
    upgrade
        .protocols([SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK])
        .read_buffer_size(1024)
        .write_buffer_size(0)
        // A frame's length is checked from its header, before it is buffered.
        .max_frame_size(max_message)
        .max_message_size(max_message)
        .on_upgrade(move |socket| async move {
            let encoding = socket
                .protocol()
                .and_then(|value| value.to_str().ok())
                .and_then(|name| Encoding::from_subprotocol(Some(name)))
                .unwrap_or(Encoding::Json);
            let caller = Caller { principal, token_digest };
            run_session(state, socket, control, caller, encoding, query.resume_from).await;
        })
}

/// Why a frame could not be handed to the client.
enum SendFailure {
    /// The connection is gone.
    Closed,
    /// The client took nothing within the write timeout.
    Stalled,
}

/// The sending half of a session with its write timeout.
struct Outgoing {
    sink: SplitSink<WebSocket, WsMessage>,
    encoding: Encoding,
    write_timeout: Duration,
}

impl Outgoing {
    async fn send_message(&mut self, message: WsMessage) -> Result<(), SendFailure> {
        match tokio::time::timeout(self.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendFailure::Closed),
            Err(_) => Err(SendFailure::Stalled),
        }
    }

    async fn send(&mut self, frame: &ServerFrame) -> Result<(), SendFailure> {
        match encode(self.encoding, frame) {
            Some(message) => self.send_message(message).await,
            None => Ok(()),
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) -> Result<(), SendFailure> {
        let frame = axum::extract::ws::CloseFrame { code, reason: reason.into() };
        self.send_message(WsMessage::Close(Some(frame))).await
    }
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

/// Who opened a session, and the digest of the token they opened it with.
struct Caller {
    principal: Principal,
    token_digest: String,
}

async fn run_session(
    state: Arc<AppState>,
    socket: WebSocket,
    control: ConnectionControl,
    caller: Caller,
    encoding: Encoding,
    resume_from: Option<u64>,
) {
    let Some(system) = state.system().cloned() else { return };
    let (sink, stream) = socket.split();
    let server = &state.config.server;
    let mut outgoing = Outgoing { sink, encoding, write_timeout: Duration::from_millis(server.ws_write_timeout_ms) };
    let ended = session_loop(&state, &system, &mut outgoing, stream, &caller, resume_from).await;
    let principal = caller.principal;
    if let Some(SendFailure::Stalled) = ended {
        // The client reads nothing: reset the connection rather than leave
        // what is queued for it, and the socket, waiting on it.
        metrics::counter!(crate::metrics::WS_WRITE_TIMEOUTS_TOTAL).increment(1);
        tracing::info!(agent_id = %principal.agent_id, "session dropped: the client took no frame within the write timeout");
        control.reset_on_close();
    }
}

/// Runs a session until it ends; returns why sending failed, if it did.
async fn session_loop(
    state: &AppState,
    system: &Arc<actors::System>,
    outgoing: &mut Outgoing,
    mut stream: futures_util::stream::SplitStream<WebSocket>,
    caller: &Caller,
    resume_from: Option<u64>,
) -> Option<SendFailure> {
    let principal = &caller.principal;
    let session_id = format!("s{:016x}", rand::random::<u64>());
    let (events_tx, mut events) = mpsc::channel(system.settings().session_queue.max(16));
    let handle = SessionHandle { session_id: session_id.clone(), sender: events_tx };
    // Attach before reading the snapshot, so no event falls between the two:
    // events already in the snapshot are skipped by their seq.
    let status = match system.attach(&principal.agent_id, handle).await {
        Ok(status) => status,
        Err(error) => return outgoing.send(&ServerFrame::error(None, error)).await.err(),
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
        Ok(reader) => opening_frames(&reader, principal, resume_from),
        Err(error) => Err(error),
    };
    let (start_seq, opening) = match opening {
        Ok(opening) => opening,
        Err(error) => {
            tracing::error!(%error, "cannot read the session's snapshot");
            system.detach(&principal.agent_id, &session_id);
            let refusal = ApiError::unavailable("the store cannot be read right now; reconnect shortly");
            return outgoing.send(&ServerFrame::error(None, refusal)).await.err();
        }
    };
    for frame in std::iter::once(welcome).chain(opening) {
        if let Err(failure) = outgoing.send(&frame).await {
            system.detach(&principal.agent_id, &session_id);
            return Some(failure);
        }
    }
    // Answers of requests handled concurrently. At most `max_in_flight` are
    // being handled at once, so the channel never holds more than that.
    // Boxed: a bare ServerFrame is ~400 bytes per slot.
    let max_in_flight = state.config.server.ws_requests_in_flight.max(1);
    let (replies_tx, mut replies) = mpsc::channel::<Box<ServerFrame>>(max_in_flight);
    let mut in_flight = 0usize;
    let mut workload_feed: Option<tokio::time::Interval> = None;
    // A manager limited to teams sees their workload only.
    let scope = system.scope(principal);
    let mut stopping = state.stopping.clone();
    let stop_signal = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    tokio::pin!(stop_signal);
    let ended = loop {
        tokio::select! {
            event = events.recv() => {
                let Some(frame) = event else {
                    // The agent actor dropped this session: its token stopped
                    // being valid (rotated, or the agent deactivated), or it
                    // fell behind, or the actor is restarting.
                    match system.principal_of_digest(&caller.token_digest) {
                        None => break outgoing.close(1008, "token revoked").await.err(),
                        Some(now) if now != *principal => {
                            break outgoing.close(1008, "role changed; reconnect").await.err();
                        }
                        Some(_) => {}
                    }
                    break outgoing.close(1013, "fell behind; reconnect with resume_from").await.err();
                };
                if frame.seq().is_some_and(|seq| seq <= start_seq) {
                    continue;
                }
                if let Err(failure) = outgoing.send(&frame).await {
                    break Some(failure);
                }
            }
            Some(reply) = replies.recv() => {
                in_flight -= 1;
                if let Err(failure) = outgoing.send(&reply).await {
                    break Some(failure);
                }
            }
            () = next_tick(&mut workload_feed) => {
                let workload = crate::http::scoped_workload(system.workload().await, scope.as_deref());
                if let Err(failure) = outgoing.send(&ServerFrame::Workload(workload)).await {
                    break Some(failure);
                }
            }
            incoming = stream.next(), if in_flight < max_in_flight => {
                let bytes = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(WsMessage::Binary(bytes))) => bytes.to_vec(),
                    Some(Err(error)) => {
                        // Among others, a frame past server.ws_max_message_bytes.
                        tracing::debug!(%error, agent_id = %principal.agent_id, "session read failed");
                        break None;
                    }
                    Some(Ok(WsMessage::Close(_))) | None => break None,
                    Some(Ok(_)) => continue,
                };
                let decoded: Result<ClientFrame, _> = if bytes.first() == Some(&b'{') {
                    Encoding::Json.decode(&bytes)
                } else {
                    Encoding::MsgPack.decode(&bytes)
                };
                match decoded {
                    Ok(ClientFrame::Subscribe { id, topic }) => {
                        // One feed per session: subscribing again answers
                        // again and sends a frame now, and starts nothing new.
                        let answer = match check_subscription(principal, &topic) {
                            Ok(()) => {
                                workload_feed.get_or_insert_with(workload_interval);
                                ServerFrame::ok(id, Map::new())
                            }
                            Err(error) => ServerFrame::error(id, error),
                        };
                        let subscribed = matches!(answer, ServerFrame::Ok { .. });
                        if let Err(failure) = outgoing.send(&answer).await {
                            break Some(failure);
                        }
                        let workload = || async { crate::http::scoped_workload(system.workload().await, scope.as_deref()) };
                        if subscribed
                            && let Err(failure) = outgoing.send(&ServerFrame::Workload(workload().await)).await
                        {
                            break Some(failure);
                        }
                    }
                    Ok(frame) => {
                        in_flight += 1;
                        let system = system.clone();
                        let principal = principal.clone();
                        let replies_tx = replies_tx.clone();
                        tokio::spawn(async move {
                            let id = frame.id().cloned();
                            let answer = match handle_request(&system, &principal, frame).await {
                                Ok(body) => ServerFrame::ok(id, body),
                                Err(error) => ServerFrame::error(id, error),
                            };
                            // Never waits: at most `max_in_flight` answers are owed.
                            let _ = replies_tx.send(Box::new(answer)).await;
                        });
                    }
                    Err(error) => {
                        let id = serde_json::from_slice::<Value>(&bytes).ok().and_then(|value| value.get("id").cloned());
                        let error = ApiError::bad_request(format!("cannot read that frame: {error}"));
                        if let Err(failure) = outgoing.send(&ServerFrame::error(id, error)).await {
                            break Some(failure);
                        }
                    }
                }
            }
            () = &mut stop_signal => {
                break outgoing.close(1001, "server shutting down").await.err();
            }
        }
    };
    system.detach(&principal.agent_id, &session_id);
    ended
}

/// The workload feed's timer: the first tick a second from now (the
/// subscription itself sends a frame at once).
fn workload_interval() -> tokio::time::Interval {
    let period = Duration::from_secs(1);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The next tick of the feed; never, without one.
async fn next_tick(feed: &mut Option<tokio::time::Interval>) {
    match feed {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
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
        (reader.agent_last_seq(&principal.agent_id)?, Vec::new())
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
        ClientFrame::Transfer { conversation_id, team, agent, note, .. } => {
            conversation(conversation_id, RequestKind::Transfer { team, agent, note }).await
        }
        ClientFrame::SetCopilot { enabled, agent_id, .. } => {
            let agent_id = agent_id.unwrap_or_else(|| principal.agent_id.clone());
            let copilot = system.set_copilot(principal, &agent_id, enabled).await?;
            Ok(object(json!({ "agent_id": agent_id, "copilot": copilot })))
        }
        ClientFrame::Subscribe { .. } => unreachable!("handled in the session loop"),
    }
}

/// Whether `principal` may subscribe to `topic` (a manager's workload feed:
/// a frame every second while the session lives).
fn check_subscription(principal: &Principal, topic: &str) -> Result<(), ApiError> {
    if topic != "workload" {
        return Err(ApiError::bad_request(format!("unknown topic {topic:?}; the only topic is \"workload\"")));
    }
    if !principal.role.sees_everything() {
        return Err(ApiError::new(ErrorCode::Forbidden, "the workload feed is for managers and admins"));
    }
    Ok(())
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
