//! The PostgreSQL side of the baseline: the schema, a small connection pool,
//! the prepared statements, and the rows turned into the contract's shapes.
//!
//! Written the way most teams write it: one table per noun, a partial unique
//! index to find "the open conversation" of a customer, a unique index on the
//! wamid for deduplication, `jsonb` for Meta's raw payload, and statements
//! prepared once per connection (what sqlx or deadpool's statement cache do).

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use anyhow::Context;
use protocol::model::{Contact, Conversation, ConversationStatus, Direction, Message, Source};
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Row, Statement};

/// Drops and recreates everything: each run starts from an empty database.
const SCHEMA: &str = r#"
DROP TABLE IF EXISTS statuses, webhook_changes, messages, conversations, agents CASCADE;

CREATE TABLE agents (
    id               text PRIMARY KEY,
    ord              integer NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'offline',
    connected        boolean NOT NULL DEFAULT false,
    capacity         integer NOT NULL,
    open_count       integer NOT NULL DEFAULT 0,
    last_assigned_at bigint
);
-- Round robin: the eligible agent assigned longest ago (never first), in configuration order.
CREATE INDEX agents_round_robin ON agents (last_assigned_at NULLS FIRST, ord);

CREATE TABLE conversations (
    id              bigserial PRIMARY KEY,
    phone_number_id text NOT NULL,
    wa_id           text NOT NULL,
    contact_name    text,
    status          text NOT NULL,
    agent_id        text REFERENCES agents (id),
    source          jsonb NOT NULL,
    fields          jsonb NOT NULL DEFAULT '{}',
    service_until   bigint,
    opened_at       bigint NOT NULL,
    assigned_at     bigint,
    closed_at       bigint
);
CREATE UNIQUE INDEX conversations_open_per_customer
    ON conversations (phone_number_id, wa_id) WHERE status <> 'closed';
CREATE INDEX conversations_queue ON conversations (opened_at, id) WHERE status = 'queued';
CREATE INDEX conversations_by_agent ON conversations (agent_id) WHERE status = 'assigned';

CREATE TABLE messages (
    seq             bigserial PRIMARY KEY,
    id              text NOT NULL,
    conversation_id bigint NOT NULL REFERENCES conversations (id),
    direction       text NOT NULL,
    kind            text NOT NULL,
    body            text,
    media           jsonb,
    at              bigint NOT NULL,
    raw             jsonb
);
CREATE UNIQUE INDEX messages_wamid ON messages (id);
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);

CREATE TABLE statuses (
    message_id text NOT NULL,
    status     text NOT NULL,
    at         bigint NOT NULL,
    raw        jsonb NOT NULL,
    PRIMARY KEY (message_id, status)
);

CREATE TABLE webhook_changes (
    id          bigserial PRIMARY KEY,
    field       text NOT NULL,
    value       jsonb NOT NULL,
    received_at bigint NOT NULL
);
"#;

const CONVERSATION_COLUMNS: &str = "id, phone_number_id, wa_id, contact_name, status, agent_id, source::text, \
     fields::text, service_until, opened_at, closed_at";
const MESSAGE_COLUMNS: &str = "id, direction, kind, body, media::text, at";

/// Creates the schema (dropping what a previous run left) and the agents
/// `bench-agent-{i}`, all `offline` and disconnected.
pub async fn create_schema(database_url: &str, agents: &[String], capacity: i32) -> anyhow::Result<()> {
    let client = connect_client(database_url).await?;
    client.batch_execute(SCHEMA).await.context("cannot create the schema")?;
    let insert = client.prepare("INSERT INTO agents (id, ord, capacity) VALUES ($1, $2, $3)").await?;
    for (index, agent) in agents.iter().enumerate() {
        let ord = i32::try_from(index).context("too many agents")?;
        client.execute(&insert, &[agent, &ord, &capacity]).await?;
    }
    Ok(())
}

async fn connect_client(database_url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {database_url}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "postgres connection ended");
        }
    });
    Ok(client)
}

/// One connection with its prepared statements.
pub struct Conn {
    pub client: Client,
    pub st: Statements,
}

impl Conn {
    pub async fn connect(database_url: &str) -> anyhow::Result<Conn> {
        let client = connect_client(database_url).await?;
        let st = Statements::prepare(&client).await?;
        Ok(Conn { client, st })
    }
}

/// Every statement the baseline runs, prepared once per connection.
pub struct Statements {
    pub message_exists: Statement,
    pub lock_open_conversation: Statement,
    pub insert_conversation: Statement,
    pub touch_conversation: Statement,
    pub insert_message: Statement,
    pub notify: Statement,
    pub insert_status: Statement,
    pub status_target: Statement,
    pub insert_change: Statement,
    pub next_queued: Statement,
    pub next_agent: Statement,
    pub take_slot: Statement,
    pub assign: Statement,
    pub conversation: Statement,
    pub messages_of: Statement,
    pub message_by_id: Statement,
    pub held_by: Statement,
    pub messages_of_many: Statement,
    pub agent_status: Statement,
    pub set_status: Statement,
    pub set_connected: Statement,
    pub lock_conversation: Statement,
    pub close: Statement,
    pub release_slot: Statement,
    pub merge_fields: Statement,
    pub queued_exists: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> anyhow::Result<Statements> {
        let conversation_by_id = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1");
        let held_by = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE agent_id = $1 AND status = 'assigned' \
             ORDER BY opened_at, id"
        );
        let messages_of = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY seq");
        let messages_of_many = format!(
            "SELECT conversation_id, {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = ANY($1) \
             ORDER BY conversation_id, seq"
        );
        let message_by_id = format!("SELECT conversation_id, {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let close = format!(
            "UPDATE conversations SET status = 'closed', closed_at = $2, fields = fields || $3::text::jsonb \
             WHERE id = $1 RETURNING {CONVERSATION_COLUMNS}"
        );
        Ok(Statements {
            message_exists: client.prepare("SELECT 1 FROM messages WHERE id = $1").await?,
            lock_open_conversation: client
                .prepare(
                    "SELECT id, status, agent_id FROM conversations \
                     WHERE phone_number_id = $1 AND wa_id = $2 AND status <> 'closed' FOR UPDATE",
                )
                .await?,
            insert_conversation: client
                .prepare(
                    "INSERT INTO conversations (phone_number_id, wa_id, contact_name, status, source, opened_at) \
                     VALUES ($1, $2, $3, 'queued', $4::text::jsonb, $5) \
                     ON CONFLICT (phone_number_id, wa_id) WHERE status <> 'closed' DO NOTHING RETURNING id",
                )
                .await?,
            touch_conversation: client
                .prepare(
                    "UPDATE conversations SET service_until = GREATEST(service_until, $2), \
                     contact_name = COALESCE($3, contact_name) WHERE id = $1",
                )
                .await?,
            insert_message: client
                .prepare(
                    "INSERT INTO messages (id, conversation_id, direction, kind, body, media, at, raw) \
                     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8::text::jsonb) \
                     ON CONFLICT (id) DO NOTHING RETURNING seq",
                )
                .await?,
            notify: client.prepare("SELECT pg_notify($1, $2)").await?,
            insert_status: client
                .prepare(
                    "INSERT INTO statuses (message_id, status, at, raw) VALUES ($1, $2, $3, $4::text::jsonb) \
                     ON CONFLICT (message_id, status) DO NOTHING RETURNING 1",
                )
                .await?,
            status_target: client
                .prepare(
                    "SELECT m.conversation_id, c.agent_id FROM messages m \
                     JOIN conversations c ON c.id = m.conversation_id \
                     WHERE m.id = $1 AND c.status = 'assigned'",
                )
                .await?,
            insert_change: client
                .prepare("INSERT INTO webhook_changes (field, value, received_at) VALUES ($1, $2::text::jsonb, $3)")
                .await?,
            next_queued: client
                .prepare(
                    "SELECT id FROM conversations WHERE status = 'queued' \
                     ORDER BY opened_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .await?,
            next_agent: client
                .prepare(
                    "SELECT id FROM agents WHERE status = 'online' AND connected AND open_count < capacity \
                     ORDER BY last_assigned_at NULLS FIRST, ord LIMIT 1 FOR UPDATE SKIP LOCKED",
                )
                .await?,
            take_slot: client
                .prepare("UPDATE agents SET open_count = open_count + 1, last_assigned_at = $2 WHERE id = $1")
                .await?,
            assign: client
                .prepare("UPDATE conversations SET status = 'assigned', agent_id = $2, assigned_at = $3 WHERE id = $1")
                .await?,
            conversation: client.prepare(&conversation_by_id).await?,
            messages_of: client.prepare(&messages_of).await?,
            message_by_id: client.prepare(&message_by_id).await?,
            held_by: client.prepare(&held_by).await?,
            messages_of_many: client.prepare(&messages_of_many).await?,
            agent_status: client.prepare("SELECT status FROM agents WHERE id = $1").await?,
            set_status: client.prepare("UPDATE agents SET status = $2 WHERE id = $1").await?,
            set_connected: client.prepare("UPDATE agents SET connected = $2 WHERE id = $1").await?,
            lock_conversation: client
                .prepare("SELECT agent_id, status, wa_id, phone_number_id FROM conversations WHERE id = $1 FOR UPDATE")
                .await?,
            close: client.prepare(&close).await?,
            release_slot: client
                .prepare("UPDATE agents SET open_count = open_count - 1 WHERE id = $1 AND open_count > 0")
                .await?,
            merge_fields: client
                .prepare(
                    "UPDATE conversations SET fields = fields || $2::text::jsonb \
                     WHERE id = $1 AND agent_id = $3 AND status = 'assigned' RETURNING fields::text",
                )
                .await?,
            queued_exists: client
                .prepare("SELECT EXISTS (SELECT 1 FROM conversations WHERE status = 'queued')")
                .await?,
        })
    }
}

/// A fixed-size pool of connections, opened on first use (what deadpool or
/// bb8 give a team in a few lines of configuration).
pub struct Pool {
    database_url: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

pub struct Pooled<'pool> {
    conn: Option<Conn>,
    pool: &'pool Pool,
    _permit: SemaphorePermit<'pool>,
}

impl Pool {
    pub fn new(database_url: &str, size: usize) -> Pool {
        Pool { database_url: database_url.to_owned(), idle: Mutex::new(Vec::new()), permits: Semaphore::new(size) }
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub async fn get(&self) -> anyhow::Result<Pooled<'_>> {
        let permit = self.permits.acquire().await.context("the pool is closed")?;
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        let conn = match idle {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => Conn::connect(&self.database_url).await?,
        };
        Ok(Pooled { conn: Some(conn), pool: self, _permit: permit })
    }
}

impl Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(conn);
        }
    }
}

/// `c{id}`: the id clients see.
pub fn conversation_key(id: i64) -> String {
    format!("c{id}")
}

pub fn parse_conversation_key(key: &str) -> Option<i64> {
    key.strip_prefix('c')?.parse().ok()
}

fn parse_status(text: &str) -> ConversationStatus {
    match text {
        "assigned" => ConversationStatus::Assigned,
        "closed" => ConversationStatus::Closed,
        _ => ConversationStatus::Queued,
    }
}

fn json_or<T: serde::de::DeserializeOwned>(text: Option<String>, fallback: T) -> T {
    text.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(fallback)
}

/// A row of [`CONVERSATION_COLUMNS`] as the contract's Conversation (no messages).
pub fn conversation_from_row(row: &Row) -> Conversation {
    let status: String = row.get(4);
    Conversation {
        id: conversation_key(row.get(0)),
        contact: Contact { wa_id: row.get(2), name: row.get(3) },
        phone_number_id: row.get(1),
        status: parse_status(&status),
        team: None,
        agent: row.get(5),
        source: json_or(row.get(6), Source::organic()),
        service_until: row.get(8),
        free_entry_until: None,
        fields: json_or::<Map<String, Value>>(row.get(7), Map::new()),
        opened_at: row.get(9),
        closed_at: row.get(10),
        messages: None,
    }
}

/// A row of [`MESSAGE_COLUMNS`] starting at column `first` as the contract's Message.
pub fn message_from_row(row: &Row, first: usize) -> Message {
    let direction: String = row.get(first + 1);
    let media: Option<String> = row.get(first + 4);
    Message {
        id: row.get(first),
        direction: if direction == "out" { Direction::Out } else { Direction::In },
        kind: row.get(first + 2),
        text: row.get(first + 3),
        media: media.and_then(|text| serde_json::from_str(&text).ok()),
        at: row.get(first + 5),
        status: None,
        free: None,
        error: None,
        author: None,
    }
}

/// One conversation with its messages, or `None` when there is no such id.
pub async fn load_conversation(
    client: &impl GenericClient,
    st: &Statements,
    id: i64,
) -> anyhow::Result<Option<Conversation>> {
    let Some(row) = client.query_opt(&st.conversation, &[&id]).await? else {
        return Ok(None);
    };
    let mut conversation = conversation_from_row(&row);
    let messages = client.query(&st.messages_of, &[&id]).await?;
    conversation.messages = Some(messages.iter().map(|row| message_from_row(row, 0)).collect());
    Ok(Some(conversation))
}

/// Every open conversation `agent` holds, with messages (the snapshot).
pub async fn held_by(client: &impl GenericClient, st: &Statements, agent: &str) -> anyhow::Result<Vec<Conversation>> {
    let rows = client.query(&st.held_by, &[&agent]).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    let mut conversations: Vec<Conversation> = rows
        .iter()
        .map(|row| {
            let mut conversation = conversation_from_row(row);
            conversation.messages = Some(Vec::new());
            conversation
        })
        .collect();
    let params: [&(dyn ToSql + Sync); 1] = [&ids];
    for row in client.query(&st.messages_of_many, &params).await? {
        let conversation_id: i64 = row.get(0);
        if let Some(index) = ids.iter().position(|id| *id == conversation_id)
            && let Some(messages) = conversations[index].messages.as_mut()
        {
            messages.push(message_from_row(&row, 1));
        }
    }
    Ok(conversations)
}
