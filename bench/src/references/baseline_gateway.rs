//! The baseline's WebSocket gateway: one connection `LISTEN`s on `assignments`
//! and `events`, one task turns each notification into the contract's frame
//! with the agent's next `seq` and hands it to that agent's sessions, and each
//! session answers its agent's requests (`set_status`, `send`, `close`,
//! `set_fields`) against PostgreSQL.
//!
//! PostgreSQL delivers notifications in commit order, across channels, on one
//! connection: an `assigned` always comes before the `message`s committed
//! after it. A `NOTIFY` payload must stay under 8,000 bytes; a frame too big
//! for it is sent by reference and read back here.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use protocol::model::{AgentStatus, ConversationStatus, Direction, Message, Role};
use protocol::ws::{ClientFrame, SUBPROTOCOL_JSON, ServerFrame, UnassignReason};
use protocol::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, GenericClient, NoTls, Notification};

use crate::store::{self, Conn, Statements};
use crate::{App, error_response, now_ms};

pub const ASSIGNMENTS: &str = "assignments";
pub const EVENTS: &str = "events";

/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_NOTIFY_PAYLOAD: usize = 7_900;
/// Events waiting for one session; past that the session is dropped (it is
/// too slow) rather than let it grow without bound.
const SESSION_QUEUE: usize = 4_096;

#[derive(Serialize)]
struct OutgoingEnvelope<'a> {
    agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame: Option<&'a ServerFrame>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_conversation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_message: Option<&'a str>,
}

#[derive(Deserialize)]
struct IncomingEnvelope {
    agent: String,
    #[serde(default)]
    frame: Option<ServerFrame>,
    #[serde(default)]
    load_conversation: Option<i64>,
    #[serde(default)]
    load_message: Option<String>,
}

/// `NOTIFY channel` with `frame` for `agent`, inside the caller's transaction
/// (so it is delivered only if, and when, that transaction commits).
pub async fn notify(
    client: &impl GenericClient,
    st: &Statements,
    channel: &str,
    agent: &str,
    frame: &ServerFrame,
) -> anyhow::Result<()> {
    let mut envelope = OutgoingEnvelope { agent, frame: Some(frame), load_conversation: None, load_message: None };
    let mut payload = serde_json::to_string(&envelope)?;
    if payload.len() > MAX_NOTIFY_PAYLOAD {
        envelope.frame = None;
        match frame {
            ServerFrame::Assigned { conversation, .. } => {
                envelope.load_conversation = store::parse_conversation_key(&conversation.id);
            }
            ServerFrame::Message { message, .. } => envelope.load_message = Some(&message.id),
            _ => anyhow::bail!("a {channel} notification is too large to send"),
        }
        payload = serde_json::to_string(&envelope)?;
    }
    client.execute(&st.notify, &[&channel, &payload]).await?;
    Ok(())
}

/// The `LISTEN` connection, already listening when returned.
pub struct Notifications {
    receiver: mpsc::UnboundedReceiver<Notification>,
    /// Dropping the client would close the connection.
    _client: Client,
}

pub async fn listen(database_url: &str) -> anyhow::Result<Notifications> {
    let (client, mut connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {database_url}"))?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|context| connection.poll_message(context)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    if sender.send(notification).is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    tracing::error!(%error, "the LISTEN connection failed");
                    break;
                }
                None => break,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {ASSIGNMENTS}; LISTEN {EVENTS}")).await?;
    Ok(Notifications { receiver, _client: client })
}

/// One frame ready to send, shared by the agent's sessions.
struct Pushed {
    text: Utf8Bytes,
    /// The conversation of an `assigned`, the message of a `message`: what a
    /// snapshot taken after the event was dispatched may already hold.
    already_in_snapshot_if: Option<String>,
}

struct SessionSender {
    id: u64,
    sender: mpsc::Sender<Arc<Pushed>>,
}

#[derive(Default)]
struct AgentHub {
    /// Last event seq, per agent across its sessions (kept in memory only).
    seq: u64,
    sessions: Vec<SessionSender>,
}

#[derive(Default)]
pub struct Gateway {
    agents: Mutex<HashMap<String, AgentHub>>,
    next_session: std::sync::atomic::AtomicU64,
    /// Serialises each agent's `connected` writes, so they land in order.
    presence: dashmap::DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Gateway {
    fn hubs(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentHub>> {
        self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs until the `LISTEN` connection ends; returns why.
    pub async fn dispatch_forever(&self, mut notifications: Notifications, loader: Conn) -> anyhow::Error {
        while let Some(notification) = notifications.receiver.recv().await {
            if let Err(error) = self.dispatch(&loader, notification.payload()).await {
                tracing::error!(error = %format!("{error:#}"), channel = notification.channel(), "notification dropped");
            }
        }
        anyhow::anyhow!("the LISTEN connection ended")
    }

    async fn dispatch(&self, loader: &Conn, payload: &str) -> anyhow::Result<()> {
        let envelope: IncomingEnvelope = serde_json::from_str(payload)?;
        let mut frame = match (envelope.frame, envelope.load_conversation, envelope.load_message) {
            (Some(frame), _, _) => frame,
            (None, Some(id), _) => {
                let conversation = store::load_conversation(&loader.client, &loader.st, id)
                    .await?
                    .with_context(|| format!("no conversation {id}"))?;
                ServerFrame::Assigned {
                    seq: 0,
                    conversation: Box::new(conversation),
                    route: Default::default(),
                    handoff: None,
                }
            }
            (None, None, Some(message_id)) => {
                let row = loader
                    .client
                    .query_opt(&loader.st.message_by_id, &[&message_id])
                    .await?
                    .with_context(|| format!("no message {message_id}"))?;
                ServerFrame::Message {
                    seq: 0,
                    conversation_id: store::conversation_key(row.get(0)),
                    message: store::message_from_row(&row, 1),
                }
            }
            (None, None, None) => anyhow::bail!("an empty notification"),
        };
        let already_in_snapshot_if = match &frame {
            ServerFrame::Assigned { conversation, .. } => Some(conversation.id.clone()),
            ServerFrame::Message { message, .. } => Some(message.id.clone()),
            _ => None,
        };
        let mut hubs = self.hubs();
        let hub = hubs.entry(envelope.agent).or_default();
        hub.seq += 1;
        frame.set_seq(hub.seq);
        let pushed = Arc::new(Pushed { text: serde_json::to_string(&frame)?.into(), already_in_snapshot_if });
        hub.sessions.retain(|session| match session.sender.try_send(pushed.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(session = session.id, "session too slow; disconnecting it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        Ok(())
    }

    /// Registers a session; returns its id, the seq its snapshot stands at,
    /// and where its events arrive.
    fn attach(&self, agent: &str) -> (u64, u64, mpsc::Receiver<Arc<Pushed>>) {
        let id = self.next_session.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, receiver) = mpsc::channel(SESSION_QUEUE);
        let mut hubs = self.hubs();
        let hub = hubs.entry(agent.to_owned()).or_default();
        hub.sessions.push(SessionSender { id, sender });
        (id, hub.seq, receiver)
    }

    fn detach(&self, agent: &str, session_id: u64) {
        if let Some(hub) = self.hubs().get_mut(agent) {
            hub.sessions.retain(|session| session.id != session_id);
        }
    }

    fn has_sessions(&self, agent: &str) -> bool {
        self.hubs().get(agent).is_some_and(|hub| !hub.sessions.is_empty())
    }

    /// Writes `agents.connected` from the sessions held now. Only connected
    /// agents get new conversations.
    async fn sync_presence(&self, app: &App, agent: &str) -> anyhow::Result<()> {
        let lock = self.presence.entry(agent.to_owned()).or_default().clone();
        let _serialised = lock.lock().await;
        let connected = self.has_sessions(agent);
        let conn = app.pool.get().await?;
        conn.client.execute(&conn.st.set_connected, &[&agent, &connected]).await?;
        if connected {
            app.work.notify_one();
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(agent) = bearer.or(query.token.as_deref()).and_then(|token| app.tokens.get(token)).cloned() else {
        return error_response(ApiError::new(ErrorCode::Unauthorized, "a valid agent token is required"));
    };
    upgrade.protocols([SUBPROTOCOL_JSON]).on_upgrade(move |socket| run_session(app, socket, agent))
}

fn text(frame: &ServerFrame) -> WsMessage {
    WsMessage::Text(serde_json::to_string(frame).unwrap_or_default().into())
}

async fn run_session(app: Arc<App>, socket: WebSocket, agent: String) {
    // Attach before reading the snapshot so nothing falls between the two;
    // events the snapshot already holds are skipped below.
    let (session_id, start_seq, mut events) = app.gateway.attach(&agent);
    let opening = async {
        app.gateway.sync_presence(&app, &agent).await?;
        let conn = app.pool.get().await?;
        let status: String = conn.client.query_one(&conn.st.agent_status, &[&agent]).await?.get(0);
        let conversations = store::held_by(&conn.client, &conn.st, &agent).await?;
        anyhow::Ok((status, conversations))
    };
    let (status, conversations) = match opening.await {
        Ok(opening) => opening,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), %agent, "cannot open a session");
            close_session(&app, &agent, session_id).await;
            return;
        }
    };
    let mut in_snapshot = HashSet::new();
    for conversation in &conversations {
        in_snapshot.insert(conversation.id.clone());
        in_snapshot.extend(conversation.messages.iter().flatten().map(|message| message.id.clone()));
    }
    let (mut sink, mut stream) = socket.split();
    let welcome = ServerFrame::Welcome {
        agent_id: agent.clone(),
        role: Role::Agent,
        session_id: format!("s{session_id:016x}"),
        server_time: now_ms(),
        status: parse_agent_status(&status),
    };
    let snapshot = ServerFrame::Snapshot { seq: start_seq, conversations };
    if sink.send(text(&welcome)).await.is_err() || sink.send(text(&snapshot)).await.is_err() {
        close_session(&app, &agent, session_id).await;
        return;
    }
    let (replies_tx, mut replies) = mpsc::unbounded_channel::<ServerFrame>();
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(pushed) = event else {
                    let _ = sink.send(WsMessage::Close(Some(CloseFrame { code: 1013, reason: "fell behind".into() }))).await;
                    break;
                };
                if pushed.already_in_snapshot_if.as_ref().is_some_and(|key| in_snapshot.contains(key)) {
                    continue;
                }
                if sink.send(WsMessage::Text(pushed.text.clone())).await.is_err() {
                    break;
                }
            }
            reply = replies.recv() => {
                if let Some(frame) = reply && sink.send(text(&frame)).await.is_err() {
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
                match serde_json::from_slice::<ClientFrame>(&bytes) {
                    Ok(frame) => {
                        let app = app.clone();
                        let agent = agent.clone();
                        let replies_tx = replies_tx.clone();
                        tokio::spawn(async move {
                            let id = frame.id().cloned();
                            let answer = match handle_request(&app, &agent, frame).await {
                                Ok(body) => ServerFrame::ok(id, body),
                                Err(error) => ServerFrame::error(id, error),
                            };
                            let _ = replies_tx.send(answer);
                        });
                    }
                    Err(error) => {
                        let id = serde_json::from_slice::<Value>(&bytes).ok().and_then(|value| value.get("id").cloned());
                        let error = ApiError::bad_request(format!("cannot read that frame: {error}"));
                        if sink.send(text(&ServerFrame::error(id, error))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    close_session(&app, &agent, session_id).await;
}

async fn close_session(app: &App, agent: &str, session_id: u64) {
    app.gateway.detach(agent, session_id);
    if let Err(error) = app.gateway.sync_presence(app, agent).await {
        tracing::warn!(error = %format!("{error:#}"), %agent, "cannot record the agent's presence");
    }
}

fn parse_agent_status(text: &str) -> AgentStatus {
    match text {
        "online" => AgentStatus::Online,
        "away" => AgentStatus::Away,
        _ => AgentStatus::Offline,
    }
}

fn agent_status_name(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Online => "online",
        AgentStatus::Away => "away",
        AgentStatus::Offline => "offline",
    }
}

fn database_error(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(%error, "request failed in the database");
    ApiError::unavailable("the database could not serve the request; retry")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn not_assigned_to(conversation_key: &str) -> ApiError {
    ApiError::forbidden(format!("conversation {conversation_key} is not assigned to you"))
}

async fn handle_request(app: &App, agent: &str, frame: ClientFrame) -> Result<Map<String, Value>, ApiError> {
    match frame {
        ClientFrame::SetStatus { status, .. } => {
            let conn = app.pool.get().await.map_err(database_error)?;
            conn.client
                .execute(&conn.st.set_status, &[&agent, &agent_status_name(status)])
                .await
                .map_err(database_error)?;
            if status == AgentStatus::Online {
                app.work.notify_one();
            }
            Ok(object(json!({ "status": status })))
        }
        ClientFrame::Send { conversation_id, text, .. } => send(app, agent, &conversation_id, text).await,
        ClientFrame::Close { conversation_id, fields, .. } => close(app, agent, &conversation_id, fields).await,
        ClientFrame::SetFields { conversation_id, fields, .. } => {
            let id =
                store::parse_conversation_key(&conversation_id).ok_or_else(|| not_assigned_to(&conversation_id))?;
            let fields = Value::Object(fields).to_string();
            let conn = app.pool.get().await.map_err(database_error)?;
            let row = conn
                .client
                .query_opt(&conn.st.merge_fields, &[&id, &fields, &agent])
                .await
                .map_err(database_error)?
                .ok_or_else(|| not_assigned_to(&conversation_id))?;
            let merged: String = row.get(0);
            let merged: Value = serde_json::from_str(&merged).unwrap_or_else(|_| json!({}));
            Ok(object(json!({ "fields": merged })))
        }
        ClientFrame::SendTemplate { .. }
        | ClientFrame::Transfer { .. }
        | ClientFrame::Subscribe { .. }
        | ClientFrame::SetCopilot { .. } => {
            Err(ApiError::bad_request("the baseline implements set_status, send, set_fields and close only"))
        }
    }
}

/// Checks the conversation, sends through the Graph API (no connection held
/// meanwhile), then stores the outbound message and notifies it.
async fn send(app: &App, agent: &str, conversation_key: &str, text: String) -> Result<Map<String, Value>, ApiError> {
    let id = store::parse_conversation_key(conversation_key).ok_or_else(|| not_assigned_to(conversation_key))?;
    let conversation = {
        let conn = app.pool.get().await.map_err(database_error)?;
        let row = conn.client.query_opt(&conn.st.conversation, &[&id]).await.map_err(database_error)?;
        row.map(|row| store::conversation_from_row(&row)).ok_or_else(|| not_assigned_to(conversation_key))?
    };
    if conversation.agent.as_deref() != Some(agent) || conversation.status != ConversationStatus::Assigned {
        return Err(not_assigned_to(conversation_key));
    }
    let wamid = app.graph.send_text(&conversation.phone_number_id, &conversation.contact.wa_id, &text).await?;
    let message = Message {
        id: wamid,
        direction: Direction::Out,
        kind: "text".to_owned(),
        text: Some(text),
        media: None,
        at: now_ms(),
        status: None,
        free: None,
        error: None,
        author: None,
    };
    let mut pooled = app.pool.get().await.map_err(database_error)?;
    let conn: &mut Conn = &mut pooled;
    let transaction = conn.client.transaction().await.map_err(database_error)?;
    let no_json: Option<String> = None;
    transaction
        .execute(
            &conn.st.insert_message,
            &[&message.id, &id, &"out", &message.kind, &message.text, &no_json, &message.at, &no_json],
        )
        .await
        .map_err(database_error)?;
    let frame = ServerFrame::Message { seq: 0, conversation_id: conversation.id.clone(), message: message.clone() };
    notify(&transaction, &conn.st, EVENTS, agent, &frame).await.map_err(database_error)?;
    transaction.commit().await.map_err(database_error)?;
    Ok(object(json!({ "message": message })))
}

async fn close(
    app: &App,
    agent: &str,
    conversation_key: &str,
    fields: Option<Map<String, Value>>,
) -> Result<Map<String, Value>, ApiError> {
    let id = store::parse_conversation_key(conversation_key).ok_or_else(|| not_assigned_to(conversation_key))?;
    let fields = Value::Object(fields.unwrap_or_default()).to_string();
    let mut pooled = app.pool.get().await.map_err(database_error)?;
    let conn: &mut Conn = &mut pooled;
    let transaction = conn.client.transaction().await.map_err(database_error)?;
    let st = &conn.st;
    let row = transaction.query_opt(&st.lock_conversation, &[&id]).await.map_err(database_error)?;
    let Some(row) = row else {
        return Err(not_assigned_to(conversation_key));
    };
    let holder: Option<String> = row.get(0);
    let status: String = row.get(1);
    if holder.as_deref() != Some(agent) || status != "assigned" {
        return Err(not_assigned_to(conversation_key));
    }
    let closed = transaction.query_one(&st.close, &[&id, &now_ms(), &fields]).await.map_err(database_error)?;
    transaction.execute(&st.release_slot, &[&agent]).await.map_err(database_error)?;
    let frame = ServerFrame::Unassigned {
        seq: 0,
        conversation_id: conversation_key.to_owned(),
        reason: UnassignReason::Closed,
    };
    notify(&transaction, st, EVENTS, agent, &frame).await.map_err(database_error)?;
    transaction.commit().await.map_err(database_error)?;
    app.work.notify_one();
    Ok(object(json!({ "conversation": store::conversation_from_row(&closed) })))
}
