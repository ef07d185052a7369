//! `switchboard-baseline`: the design most teams build instead of Switchboard,
//! measured beside the engine by `switchboard-bench` (issue #3, "the common
//! design"). It speaks the same public interface (signed webhooks in, the
//! WebSocket subset agents use, Graph API sends out) so the harness drives both
//! alike and applies the same correctness counters.
//!
//! The design, written the usual way and on purpose not tuned beyond it:
//! - `POST /webhooks/whatsapp` checks `X-Hub-Signature-256`, parses Meta's
//!   payload and, in ONE PostgreSQL transaction (`synchronous_commit=on`),
//!   finds or creates the customer's open conversation (row locked `FOR
//!   UPDATE`), inserts each message (`ON CONFLICT (id) DO NOTHING` drops
//!   redelivered wamids) and, for a conversation already assigned, `NOTIFY
//!   events` with the message; 200 only after `COMMIT` returns.
//! - A few assignment workers, woken in process whenever work may be waiting
//!   (a message for a queued conversation, a close freeing capacity, an agent
//!   connecting or going online), loop `SELECT … FROM conversations WHERE
//!   status='queued' ORDER BY opened_at LIMIT 1 FOR UPDATE SKIP LOCKED`, take
//!   the round-robin agent (`status='online'`, connected, `open_count <
//!   capacity`; least recently assigned first) with `FOR UPDATE SKIP LOCKED`,
//!   update both rows, `NOTIFY assignments` with the conversation, commit,
//!   and go back to sleep when nothing is queued or no agent row is free.
//! - A WebSocket gateway `LISTEN`s on one connection and pushes to the agents'
//!   sessions (`baseline_gateway.rs`).
//!
//! Known flaw of the straightforward version, kept: when a worker finds a
//! queued conversation but every candidate agent row is locked by other
//! workers (`SKIP LOCKED` skips them), or the conversation row is locked by a
//! webhook appending to it, the worker rolls back and sleeps, and if the other
//! workers also stop before it is unlocked nothing wakes anyone for that
//! conversation again. Built this way on the 2-core machine (issue #3,
//! "facts measured") it left some conversations unassigned under load. The
//! usual fix, done here too: a periodic sweeper that re-signals every worker
//! while anything is still queued (`--sweep-ms`, default 250; 0 turns it off
//! to show the flaw, which is timing-dependent and does not show every run).
//!
//! Deliberately absent (the engine has them, the common design often does not):
//! resume after a reconnect (`resume_from` is ignored: a snapshot is always
//! sent), a presence grace period (an agent with no session is at once not
//! eligible; its conversations stay with it), throttling retries on sends,
//! templates, transfers, SLA timers, MessagePack.

#[path = "../references/baseline_gateway.rs"]
mod gateway;
#[path = "../references/baseline_store.rs"]
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The engine's allocator, so the comparison is of designs, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use protocol::graph::{GraphErrorEnvelope, SendMessageRequest, SendMessageResponse};
use protocol::model::DeliveryStatus;
use protocol::webhook::{ContactProfile, MessagesValue, WebhookPayload};
use protocol::ws::ServerFrame;
use protocol::{ApiError, ErrorCode};
use serde_json::json;
use tokio::sync::Notify;
use tokio_postgres::Transaction;

use crate::store::{Conn, Pool, Statements};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-baseline",
    about = "The common design (PostgreSQL + SKIP LOCKED + NOTIFY), for the bench"
)]
struct Cli {
    /// Address to serve HTTP and WebSocket on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PostgreSQL URL, e.g. the one `bench/scripts/postgres.sh start` prints.
    #[arg(long)]
    database_url: String,
    /// Graph API base, `{graph_base_url}/{phone_number_id}/messages` is POSTed to.
    #[arg(long)]
    graph_base_url: String,
    #[arg(long, default_value = "bench-access-token")]
    access_token: String,
    /// Key of `X-Hub-Signature-256`.
    #[arg(long)]
    app_secret: String,
    /// Agents `bench-agent-{i}` (token `bench-agent-{i}-token`), i from 1 to N as the harness numbers them.
    #[arg(long, default_value_t = 10)]
    agents: usize,
    /// Open conversations per agent at most.
    #[arg(long, default_value_t = 20)]
    capacity: i32,
    /// Assignment workers (each holds its own connection).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Connections for webhooks and agents' requests.
    #[arg(long, default_value_t = 16)]
    pool: usize,
    /// The sweeper's period: while anything is queued, workers are re-signalled.
    /// 0 turns it off (the straightforward design alone, with its stalls).
    #[arg(long, default_value_t = 250)]
    sweep_ms: u64,
}

pub struct App {
    app_secret: Vec<u8>,
    pool: Pool,
    gateway: gateway::Gateway,
    /// token → agent id.
    tokens: HashMap<String, String>,
    /// Wakes assignment workers: new queued work, freed capacity, an agent online.
    work: Notify,
    graph: Graph,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let agents: Vec<String> = (1..=cli.agents).map(|index| format!("bench-agent-{index}")).collect();
    store::create_schema(&cli.database_url, &agents, cli.capacity).await?;
    let tokens = agents.iter().map(|agent| (format!("{agent}-token"), agent.clone())).collect();
    let notifications = gateway::listen(&cli.database_url).await?;
    let app = Arc::new(App {
        app_secret: cli.app_secret.clone().into_bytes(),
        pool: Pool::new(&cli.database_url, cli.pool.max(1)),
        gateway: gateway::Gateway::default(),
        tokens,
        work: Notify::new(),
        graph: Graph::new(&cli.graph_base_url, &cli.access_token),
    });
    let loader = Conn::connect(&cli.database_url).await?;
    {
        let app = app.clone();
        tokio::spawn(async move {
            let error = app.gateway.dispatch_forever(notifications, loader).await;
            // Without the LISTEN connection nothing reaches agents any more:
            // stop rather than keep acknowledging webhooks no one will see.
            tracing::error!(%error, "the gateway stopped");
            std::process::exit(1);
        });
    }
    for index in 0..cli.workers.max(1) {
        let conn = Conn::connect(&cli.database_url).await?;
        tokio::spawn(assignment_worker(app.clone(), conn, index));
    }
    if cli.sweep_ms > 0 {
        let conn = Conn::connect(&cli.database_url).await?;
        tokio::spawn(sweeper(app.clone(), conn, Duration::from_millis(cli.sweep_ms)));
    }

    let router = Router::new()
        .route("/webhooks/whatsapp", post(receive_webhook))
        .route("/readyz", get(|| async { "ready" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/ws", get(gateway::upgrade))
        .with_state(app.clone());
    let listener =
        tokio::net::TcpListener::bind(cli.listen).await.with_context(|| format!("cannot bind {}", cli.listen))?;
    let address = listener.local_addr()?;
    // The same line as the engine prints, so the harness treats both alike.
    println!("switchboard listening on http://{address}");
    // No graceful shutdown: SIGTERM/SIGINT end the process. Everything
    // acknowledged is already committed in PostgreSQL.
    // Same as the engine: TCP_NODELAY, so neither pays the delayed-ACK tail.
    axum::serve(listener.tap_io(|tcp| drop(tcp.set_nodelay(true))), router).await?;
    Ok(())
}

pub fn error_response(error: ApiError) -> Response {
    let status = StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(error)).into_response()
}

async fn receive_webhook(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers.get("x-hub-signature-256").and_then(|value| value.to_str().ok());
    if !protocol::signature::verify(&app.app_secret, signature, &body) {
        return error_response(ApiError::new(
            ErrorCode::Unauthorized,
            "X-Hub-Signature-256 is missing or does not match the body",
        ));
    }
    let payload = match WebhookPayload::parse(&body).map_err(|error| error.to_string()).and_then(|payload| {
        check_messages(&payload)?;
        Ok(payload)
    }) {
        Ok(payload) => payload,
        Err(error) => return error_response(ApiError::bad_request(error)),
    };
    match ingest(&app, &payload).await {
        Ok(ingested) => {
            if ingested.queued {
                app.work.notify_one();
            }
            axum::Json(json!({ "accepted": ingested.accepted, "duplicates": ingested.duplicates })).into_response()
        }
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "webhook not stored");
            error_response(ApiError::unavailable("the payload could not be stored; Meta will retry"))
        }
    }
}

/// What must hold before anything is stored: every message has an id and a sender.
fn check_messages(payload: &WebhookPayload) -> Result<(), String> {
    for change in payload.entry.iter().flat_map(|entry| &entry.changes).filter(|change| change.field == "messages") {
        let value = change.messages_value().map_err(|error| error.to_string())?;
        for message in &value.messages {
            if message.id.is_empty() {
                return Err("a message has an empty `id`".to_owned());
            }
            if message.sender_key().is_none() {
                return Err(format!("message {} has neither `from` nor `from_user_id`", message.id));
            }
        }
    }
    Ok(())
}

#[derive(Default)]
struct Ingested {
    accepted: usize,
    duplicates: usize,
    /// Some message went to a conversation waiting for an agent.
    queued: bool,
}

/// The whole payload in one transaction, committed before the 200.
async fn ingest(app: &App, payload: &WebhookPayload) -> anyhow::Result<Ingested> {
    let received_at = now_ms();
    let mut pooled = app.pool.get().await?;
    let conn: &mut Conn = &mut pooled;
    let transaction = conn.client.transaction().await?;
    let st = &conn.st;
    let mut ingested = Ingested::default();
    for entry in &payload.entry {
        for change in &entry.changes {
            if change.field != "messages" {
                let value = serde_json::to_string(change)?;
                transaction.execute(&st.insert_change, &[&change.field, &value, &received_at]).await?;
                ingested.accepted += 1;
                continue;
            }
            let value = change.messages_value()?;
            ingest_messages(&transaction, st, &value, received_at, &mut ingested).await?;
            ingest_statuses(&transaction, st, &value, received_at, &mut ingested).await?;
        }
    }
    transaction.commit().await?;
    Ok(ingested)
}

async fn ingest_messages(
    transaction: &Transaction<'_>,
    st: &Statements,
    value: &MessagesValue,
    received_at: i64,
    ingested: &mut Ingested,
) -> anyhow::Result<()> {
    let phone_number_id = &value.metadata.phone_number_id;
    for message in &value.messages {
        let Some(customer) = message.sender_key() else {
            anyhow::bail!("message {} has neither `from` nor `from_user_id`", message.id);
        };
        if transaction.query_opt(&st.message_exists, &[&message.id]).await?.is_some() {
            ingested.duplicates += 1;
            continue;
        }
        let name = contact_name(&value.contacts, customer);
        let (conversation_id, status, agent) = find_or_open_conversation(
            transaction,
            st,
            phone_number_id,
            customer,
            name.as_deref(),
            message,
            received_at,
        )
        .await?;
        let shown = protocol::rules::inbound_message(message, received_at);
        let media = shown.media.as_ref().map(|media| media.to_string());
        let raw = serde_json::to_string(message)?;
        let inserted = transaction
            .query_opt(
                &st.insert_message,
                &[&shown.id, &conversation_id, &"in", &shown.kind, &shown.text, &media, &shown.at, &raw],
            )
            .await?;
        if inserted.is_none() {
            // A concurrent redelivery of the same wamid committed first.
            ingested.duplicates += 1;
            continue;
        }
        ingested.accepted += 1;
        let service_until = message.timestamp_ms().unwrap_or(received_at) + protocol::rules::SERVICE_WINDOW_MS;
        transaction.execute(&st.touch_conversation, &[&conversation_id, &service_until, &name]).await?;
        match (status.as_str(), agent) {
            ("assigned", Some(agent)) => {
                let frame = ServerFrame::Message {
                    seq: 0,
                    conversation_id: store::conversation_key(conversation_id),
                    message: shown,
                };
                gateway::notify(transaction, st, gateway::EVENTS, &agent, &frame).await?;
            }
            _ => ingested.queued = true,
        }
    }
    Ok(())
}

/// The open conversation of this customer, locked until commit (so an
/// assignment cannot slip between reading its status and adding the message),
/// or a new queued one.
async fn find_or_open_conversation(
    transaction: &Transaction<'_>,
    st: &Statements,
    phone_number_id: &str,
    customer: &str,
    name: Option<&str>,
    message: &protocol::webhook::InboundMessage,
    received_at: i64,
) -> anyhow::Result<(i64, String, Option<String>)> {
    loop {
        if let Some(row) = transaction.query_opt(&st.lock_open_conversation, &[&phone_number_id, &customer]).await? {
            return Ok((row.get(0), row.get(1), row.get(2)));
        }
        let source = serde_json::to_string(&protocol::rules::source_of(message))?;
        let created = transaction
            .query_opt(&st.insert_conversation, &[&phone_number_id, &customer, &name, &source, &received_at])
            .await?;
        if let Some(row) = created {
            return Ok((row.get(0), "queued".to_owned(), None));
        }
        // Another webhook opened it meanwhile: read (and lock) theirs.
    }
}

fn contact_name(contacts: &[ContactProfile], customer: &str) -> Option<String> {
    contacts
        .iter()
        .find(|contact| contact.wa_id.as_deref() == Some(customer) || contact.user_id.as_deref() == Some(customer))
        .or(contacts.first())
        .and_then(|contact| contact.profile.as_ref())
        .and_then(|profile| profile.name.clone())
}

async fn ingest_statuses(
    transaction: &Transaction<'_>,
    st: &Statements,
    value: &MessagesValue,
    received_at: i64,
    ingested: &mut Ingested,
) -> anyhow::Result<()> {
    for status in &value.statuses {
        let at = status.timestamp_ms().unwrap_or(received_at);
        let raw = serde_json::to_string(status)?;
        let inserted = transaction.query_opt(&st.insert_status, &[&status.id, &status.status, &at, &raw]).await?;
        if inserted.is_none() {
            ingested.duplicates += 1;
            continue;
        }
        ingested.accepted += 1;
        let Some(delivery) = DeliveryStatus::parse(&status.status) else { continue };
        let Some(target) = transaction.query_opt(&st.status_target, &[&status.id]).await? else { continue };
        let conversation_id: i64 = target.get(0);
        let agent: Option<String> = target.get(1);
        let Some(agent) = agent else { continue };
        let error =
            status.errors.first().map(|error| protocol::rules::meta_error(error.code, error.message.as_deref()));
        let frame = ServerFrame::Status {
            seq: 0,
            conversation_id: store::conversation_key(conversation_id),
            message_id: status.id.clone(),
            status: delivery,
            error,
        };
        gateway::notify(transaction, st, gateway::EVENTS, &agent, &frame).await?;
    }
    Ok(())
}

enum Assignment {
    Assigned,
    NothingQueued,
    /// A conversation is queued but no agent row was free (none eligible, or
    /// every candidate locked by another worker).
    NoAgent,
}

/// Sleeps until signalled, then assigns until nothing more can be.
async fn assignment_worker(app: Arc<App>, mut conn: Conn, index: usize) {
    loop {
        app.work.notified().await;
        loop {
            match assign_one(&mut conn).await {
                Ok(Assignment::Assigned) => continue,
                Ok(Assignment::NothingQueued | Assignment::NoAgent) => break,
                Err(error) => {
                    tracing::warn!(worker = index, error = %format!("{error:#}"), "assignment failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if conn.client.is_closed() {
                        match Conn::connect(app.pool.database_url()).await {
                            Ok(fresh) => conn = fresh,
                            Err(error) => tracing::warn!(worker = index, %error, "cannot reconnect"),
                        }
                    }
                    break;
                }
            }
        }
    }
}

async fn assign_one(conn: &mut Conn) -> anyhow::Result<Assignment> {
    let transaction = conn.client.transaction().await?;
    let st = &conn.st;
    let Some(queued) = transaction.query_opt(&st.next_queued, &[]).await? else {
        transaction.rollback().await?;
        return Ok(Assignment::NothingQueued);
    };
    let conversation_id: i64 = queued.get(0);
    let Some(candidate) = transaction.query_opt(&st.next_agent, &[]).await? else {
        transaction.rollback().await?;
        return Ok(Assignment::NoAgent);
    };
    let agent: String = candidate.get(0);
    let now = now_ms();
    transaction.execute(&st.take_slot, &[&agent, &now]).await?;
    transaction.execute(&st.assign, &[&conversation_id, &agent, &now]).await?;
    let conversation =
        store::load_conversation(&transaction, st, conversation_id).await?.context("a locked conversation vanished")?;
    let frame = ServerFrame::Assigned {
        seq: 0,
        conversation: Box::new(conversation),
        route: Default::default(),
        handoff: None,
    };
    gateway::notify(&transaction, st, gateway::ASSIGNMENTS, &agent, &frame).await?;
    transaction.commit().await?;
    Ok(Assignment::Assigned)
}

/// The fix the straightforward design needs (see the top of this file): while
/// anything is queued, wake every worker now and then.
async fn sweeper(app: Arc<App>, mut conn: Conn, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match conn.client.query_one(&conn.st.queued_exists, &[]).await {
            Ok(row) => {
                if row.get::<_, bool>(0) {
                    app.work.notify_waiters();
                    app.work.notify_one();
                }
            }
            Err(error) => {
                tracing::warn!(%error, "sweeper query failed");
                if conn.client.is_closed()
                    && let Ok(fresh) = Conn::connect(app.pool.database_url()).await
                {
                    conn = fresh;
                }
            }
        }
    }
}

/// `POST {graph_base_url}/{phone_number_id}/messages`, once (no retries).
pub struct Graph {
    http: reqwest::Client,
    base_url: String,
    access_token: String,
}

impl Graph {
    fn new(base_url: &str, access_token: &str) -> Graph {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .build()
            .expect("a plain HTTP client always builds");
        Graph { http, base_url: base_url.trim_end_matches('/').to_owned(), access_token: access_token.to_owned() }
    }

    /// The wamid Meta gave the message.
    pub async fn send_text(&self, phone_number_id: &str, to: &str, text: &str) -> Result<String, ApiError> {
        let url = format!("{}/{phone_number_id}/messages", self.base_url);
        let body = SendMessageRequest::text(to, text);
        let response =
            self.http.post(&url).bearer_auth(&self.access_token).json(&body).send().await.map_err(|error| {
                ApiError::new(ErrorCode::UpstreamError, format!("could not reach the Graph API: {error}"))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| {
            ApiError::new(ErrorCode::UpstreamError, format!("no answer from the Graph API: {error}"))
        })?;
        if !status.is_success() {
            if let Ok(envelope) = serde_json::from_slice::<GraphErrorEnvelope>(&bytes) {
                return Err(protocol::rules::meta_error(envelope.error.code, Some(&envelope.error.message)));
            }
            return Err(ApiError::new(ErrorCode::UpstreamError, format!("the Graph API answered {status}")));
        }
        let answer: SendMessageResponse = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::new(ErrorCode::UpstreamError, format!("unexpected Graph API answer: {error}"))
        })?;
        answer
            .messages
            .into_iter()
            .next()
            .map(|sent| sent.id)
            .ok_or_else(|| ApiError::new(ErrorCode::UpstreamError, "the Graph API returned no message id"))
    }
}
