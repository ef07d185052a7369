//! An outbound message Meta may have accepted is never missing from history:
//! the real binary is killed (-9) while Meta holds its answer to a send; after
//! the restart the message shows as `unknown`, and Meta's status webhook for
//! it reconciles it. Nothing is sent twice and the agent never gets `ok` for
//! a send it cannot know the outcome of.

use std::process::Child;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_tests::*;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

type TestResult = anyhow::Result<()>;

/// Starts the real binary on port 0; returns the child and its base URL.
fn spawn_server(config_path: &std::path::Path) -> anyhow::Result<(Child, String)> {
    spawn_binary(env!("CARGO_BIN_EXE_switchboard-under-test"), config_path)
}

/// A Graph API that takes every send and never answers: the request reached
/// Meta, the answer never comes back (as when the engine dies meanwhile).
struct HeldGraph {
    base_url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    arrived: mpsc::UnboundedReceiver<Value>,
}

impl HeldGraph {
    async fn start() -> anyhow::Result<HeldGraph> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v23.0", listener.local_addr()?);
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (sender, arrived) = mpsc::unbounded_channel();
        let kept = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (bodies, sender) = (kept.clone(), sender.clone());
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let body = loop {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                        let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if buffer.len() >= end + 4 + length {
                            break serde_json::from_slice::<Value>(&buffer[end + 4..end + 4 + length])
                                .unwrap_or(Value::Null);
                        }
                    };
                    bodies.lock().unwrap().push(body.clone());
                    let _ = sender.send(body);
                    // Hold the answer until the engine goes away.
                    let _ = socket.read(&mut chunk).await;
                });
            }
        });
        Ok(HeldGraph { base_url, bodies, arrived })
    }

    fn sends(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }
}

fn status_webhook(wamid: &str, to: &str, status: &str) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": PHONE_NUMBER_ID },
            "statuses": [{ "id": wamid, "status": status, "timestamp": now_s().to_string(), "recipient_id": to }],
        }}]}],
    })
}

struct Running {
    child: Child,
    base_url: String,
    http: reqwest::Client,
}

impl Running {
    async fn start(config_path: &std::path::Path) -> anyhow::Result<Running> {
        let (child, base_url) = spawn_server(config_path)?;
        let http = reqwest::Client::new();
        switchboard_tests::until_ready(&http, &base_url).await?;
        Ok(Running { child, base_url, http })
    }

    async fn webhook(&self, payload: &Value) -> anyhow::Result<()> {
        let (status, answer) =
            post_signed(&self.http, &self.base_url, APP_SECRET, &serde_json::to_vec(payload)?).await?;
        anyhow::ensure!(status == 200, "webhook answered {status}: {answer}");
        Ok(())
    }

    async fn messages(&self, conversation_id: &str) -> anyhow::Result<Vec<Value>> {
        let conversation: Value = self
            .http
            .get(format!("{}/api/v1/conversations/{conversation_id}", self.base_url))
            .bearer_auth(MANAGER_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        Ok(conversation["messages"].as_array().cloned().unwrap_or_default())
    }

    async fn agent(&self) -> anyhow::Result<WsClient> {
        let mut agent = WsClient::connect(&self.base_url, &agent_token("a1"), Protocol::Json, None).await?;
        agent.expect_type("welcome").await?;
        agent.expect_type("snapshot").await?;
        let answer = agent.request(json!({"type": "set_status", "status": "online"})).await?;
        anyhow::ensure!(answer["type"] == "ok", "set_status: {answer}");
        Ok(agent)
    }

    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?; // SIGKILL: no shutdown, no flush
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Running {
    /// A failed assertion must not leave the engine running (it would keep
    /// the test's output pipe open).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the engine against a held Graph API, opens a conversation with
/// `customer`, has agent a1 send `text` (request id "r1") and waits until the
/// Graph API holds it. Returns the engine, the agent and the conversation id.
async fn send_held(
    config_path: &std::path::Path,
    graph: &mut HeldGraph,
    customer: &str,
    text: &str,
) -> anyhow::Result<(Running, WsClient, String)> {
    let engine = Running::start(config_path).await?;
    let mut agent = engine.agent().await?;
    engine.webhook(&inbound_text(customer, &format!("wamid.in.{customer}"), "is anyone there?")).await?;
    let assigned = agent.expect_type("assigned").await?;
    let conversation_id = assigned["conversation"]["id"].as_str().unwrap_or_default().to_owned();
    agent.send(&json!({"type": "send", "id": "r1", "conversation_id": conversation_id, "text": text})).await?;
    let body = tokio::time::timeout(WAIT, graph.arrived.recv()).await?.expect("the Graph API is up");
    assert_eq!(body["to"], customer, "{body}");
    assert_eq!(body["text"]["body"], text);
    Ok((engine, agent, conversation_id))
}

/// Reads the old session to its end (the engine was killed): it never got
/// an answer to "r1".
async fn assert_never_answered(mut agent: WsClient) {
    while let Ok(frame) = agent.next().await {
        assert_ne!(frame["id"], "r1", "a send whose outcome is unknown was answered: {frame}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_held_by_meta_across_kill_dash_nine_shows_as_unknown_then_reconciles() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut graph = HeldGraph::start().await?;
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, test_config_toml(&dir.path().join("data"), &graph.base_url))?;
    let customer = "919600000001";
    let (engine, agent, conversation_id) = send_held(&config_path, &mut graph, customer, "your order shipped").await?;
    engine.kill()?;
    assert_never_answered(agent).await;

    let engine = Running::start(&config_path).await?;
    let messages = engine.messages(&conversation_id).await?;
    assert_eq!(messages.len(), 2, "the inbound message and the send Meta may have: {messages:?}");
    let sent = &messages[1];
    assert_eq!((sent["direction"].clone(), sent["text"].clone()), (json!("out"), json!("your order shipped")));
    assert_eq!(sent["status"], "unknown", "{sent}");

    // Meta's status for the wamid it gave the held send: the message takes it.
    engine.webhook(&status_webhook("wamid.HELD.1", customer, "delivered")).await?;
    let messages = eventually(|| async {
        let messages = engine.messages(&conversation_id).await.ok()?;
        (messages.get(1)?["status"] == "delivered").then_some(messages)
    })
    .await?;
    assert_eq!(messages.len(), 2, "reconciled in place, not added: {messages:?}");
    assert_eq!(messages[1]["id"], "wamid.HELD.1");
    assert_eq!(messages[1]["text"], "your order shipped");

    // A new session of the agent: still no answer to "r1" (the marker
    // request's `ok` comes after anything queued for it), and Meta got the
    // message once.
    let mut agent = engine.agent().await?;
    assert!(agent.buffered().iter().all(|frame| frame["id"] != "r1"), "{:?}", agent.buffered());
    let _ = agent.request(json!({"type": "set_status", "status": "online"})).await?;
    assert!(agent.buffered().iter().all(|frame| frame["id"] != "r1"), "{:?}", agent.buffered());
    assert_eq!(graph.sends(), 1, "never sent twice");
    engine.kill()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_came_while_the_send_was_held_reconciles_it_at_the_restart() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut graph = HeldGraph::start().await?;
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, test_config_toml(&dir.path().join("data"), &graph.base_url))?;
    let customer = "919600000002";
    let (engine, agent, conversation_id) = send_held(&config_path, &mut graph, customer, "see you at 5").await?;
    // Meta sent it and says so before the engine hears Meta's answer: the
    // status waits (pending) for a message with that wamid.
    engine.webhook(&status_webhook("wamid.HELD.2", customer, "sent")).await?;
    engine.kill()?;
    assert_never_answered(agent).await;

    let engine = Running::start(&config_path).await?;
    let messages = eventually(|| async {
        let messages = engine.messages(&conversation_id).await.ok()?;
        (messages.get(1)?["status"] == "sent").then_some(messages)
    })
    .await?;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1]["id"], "wamid.HELD.2");
    assert_eq!(messages[1]["text"], "see you at 5");
    engine.webhook(&status_webhook("wamid.HELD.2", customer, "read")).await?;
    eventually(|| async {
        let messages = engine.messages(&conversation_id).await.ok()?;
        (messages.get(1)?["status"] == "read").then_some(())
    })
    .await?;
    assert_eq!(graph.sends(), 1, "never sent twice");
    engine.kill()
}
