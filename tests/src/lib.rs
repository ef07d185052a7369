//! Test harness for black-box tests: a real server on port 0 with the Cloud
//! API emulator as Meta, signed webhooks over HTTP, and WebSocket clients that
//! speak the contract's frames.
//!
//! The simulators themselves (emulator, signed-webhook client, agent client)
//! live in `sim`; this crate starts the engine with them and re-exports what
//! tests name ([`WsClient`], [`Protocol`], [`WAIT`]). It deliberately holds no
//! test of its own: those are the files in `tests/tests/`.

pub mod copilot;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use engine::config::Config;
use engine::server::{RunningServer, StartOptions};
use serde_json::{Value, json};
use sim::emulator::{Emulator, EmulatorConfig};

pub use sim::agent::{Protocol, WAIT, WsClient};

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const ACCESS_TOKEN: &str = "test-access-token";
pub const PHONE_NUMBER_ID: &str = "100000000000001";
pub const MANAGER_TOKEN: &str = "manager-token-1";

/// A test configuration: team `sales` with agents a1..a3 (tokens
/// `a1-token-xyz`…), and a manager.
pub fn test_config_toml(data_dir: &Path, graph_base_url: &str) -> String {
    let head = config_head(&data_dir.display().to_string(), graph_base_url);
    format!(
        r#"{head}
[presence]
grace_s = 60

[[teams]]
id = "sales"
assignment = "round_robin"

[[agents]]
id = "a1"
token = "a1-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "a2"
token = "a2-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "a3"
token = "a3-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["closed_won", "follow_up"]
required_on_close = true
won_values = ["closed_won"]
"#
    )
}

pub fn agent_token(agent: &str) -> String {
    format!("{agent}-token-xyz")
}

/// A running engine with its emulator and data directory.
pub struct Harness {
    pub server: Option<RunningServer>,
    pub emulator: Emulator,
    pub data_dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Harness {
    pub async fn start() -> Result<Harness> {
        Self::start_with(StartOptions::default(), |_| {}).await
    }

    pub async fn start_with(options: StartOptions, adjust: impl FnOnce(&mut Config)) -> Result<Harness> {
        let data_dir = tempfile::tempdir()?;
        let emulator = start_emulator(true).await?;
        let text = test_config_toml(data_dir.path(), &emulator.base_url());
        let mut config =
            Config::from_toml("test config", &text, std::iter::empty()).map_err(|error| anyhow!("{error}"))?;
        adjust(&mut config);
        let server = engine::server::start(config, options).await?;
        emulator.set_webhook_url(Some(sim::webhook::webhook_url(&server.base_url())));
        Ok(Harness { server: Some(server), emulator, data_dir, http: reqwest::Client::new() })
    }

    /// Stops the server and starts it again on the same data directory and
    /// configuration (as after a restart), with new start options.
    pub async fn restart(&mut self, options: StartOptions) -> Result<()> {
        let server = self.server.take().expect("running");
        let mut config = server.state.config.clone();
        server.shutdown().await;
        config.server.listen = "127.0.0.1:0".to_owned();
        let server = engine::server::start(config, options).await?;
        self.emulator.set_webhook_url(Some(sim::webhook::webhook_url(&server.base_url())));
        self.server = Some(server);
        Ok(())
    }

    /// Stops the server, runs `between` while it is down (a test moves its
    /// manual clock), then starts it again as [`Harness::restart`] does.
    pub async fn restart_after(&mut self, options: StartOptions, between: impl FnOnce()) -> Result<()> {
        let server = self.server.take().expect("running");
        let mut config = server.state.config.clone();
        server.shutdown().await;
        between();
        config.server.listen = "127.0.0.1:0".to_owned();
        let server = engine::server::start(config, options).await?;
        self.emulator.set_webhook_url(Some(sim::webhook::webhook_url(&server.base_url())));
        self.server = Some(server);
        Ok(())
    }

    /// Lets the promise-to-pay follow-ups take in the log and fire what is
    /// due at the clock's reading now; returns once each firing is
    /// committed (its `followup` frames and `followup_due` event).
    pub async fn settle_followups(&self) {
        if let Some(followups) = self.server().state.followups.get() {
            followups.settle().await;
        }
    }

    /// Lets the co-pilot's suggestions consumer take in the log up to its
    /// head now; returns once every suggestion it made is committed.
    pub async fn settle_suggestions(&self) {
        if let Some(suggestions) = self.server().state.suggestions.get() {
            suggestions.settle().await;
        }
    }

    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("running")
    }

    pub fn base_url(&self) -> String {
        self.server().base_url()
    }

    pub fn system(&self) -> &Arc<actors::System> {
        self.server().system()
    }

    /// Posts a signed webhook body; returns the HTTP status and JSON body.
    pub async fn post_webhook(&self, body: &Value) -> Result<(u16, Value)> {
        post_signed(&self.http, &self.base_url(), APP_SECRET, &serde_json::to_vec(body)?).await
    }

    pub async fn post_raw(&self, body: &[u8], signature: Option<&str>) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .post(sim::webhook::webhook_url(&self.base_url()))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header(sim::webhook::SIGNATURE_HEADER, signature);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// GET an API path with a Bearer token; returns status and JSON.
    pub async fn get(&self, path: &str, token: &str) -> Result<(u16, Value)> {
        let response = self.http.get(format!("{}{path}", self.base_url())).bearer_auth(token).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Result<(u16, Value)> {
        let response =
            self.http.post(format!("{}{path}", self.base_url())).bearer_auth(token).json(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Any method on an API path with a Bearer token and an optional JSON
    /// body; returns status and JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url())).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn connect(&self, agent_token: &str) -> Result<WsClient> {
        WsClient::connect(&self.base_url(), agent_token, Protocol::Json, None).await
    }

    /// Connects an agent and sets it online.
    pub async fn online_agent(&self, agent: &str) -> Result<WsClient> {
        let mut client = self.connect(&agent_token(agent)).await?;
        client.expect_type("welcome").await?;
        client.expect_type("snapshot").await?;
        let answer = client.request(json!({"type": "set_status", "status": "online"})).await?;
        if answer["type"] != "ok" {
            bail!("set_status failed: {answer}");
        }
        Ok(client)
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.emulator.shutdown();
    }
}

/// Posts a signed webhook body to `{base_url}/webhooks/whatsapp`; returns the
/// HTTP status and the JSON answer (or its text as a JSON string).
pub async fn post_signed(http: &reqwest::Client, base_url: &str, secret: &str, body: &[u8]) -> Result<(u16, Value)> {
    Ok(sim::webhook::post_signed(http, base_url, secret, body).await?)
}

/// The `[server]`, `[whatsapp]` and `[engine]` sections of a test
/// configuration written whole (routing tests add teams, agents, numbers
/// and rules after it).
pub fn config_head(data_dir: &str, graph_base_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[whatsapp]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
access_token = "{ACCESS_TOKEN}"
graph_base_url = "{graph_base_url}"

[engine]
tick_ms = 50
"#
    )
}

impl Harness {
    /// Starts the server on `body` (teams, agents, rules…) after
    /// [`config_head`] for its data directory and the emulator.
    pub async fn start_on(name: &str, body: &str) -> Result<Harness> {
        Self::start_on_with(StartOptions::default(), name, body).await
    }

    /// [`Harness::start_on`] with `options` (a manual clock, a model hook…).
    pub async fn start_on_with(options: StartOptions, name: &str, body: &str) -> Result<Harness> {
        Self::start_with(options, |config| {
            let head = config_head(&config.server.data_dir.display().to_string(), &config.whatsapp.graph_base_url);
            *config = Config::from_toml(name, &format!("{head}\n{body}"), std::iter::empty())
                .expect("the test configuration is valid");
        })
        .await
    }
}

/// Meta's webhook for one inbound message of any type (`message` without
/// `from`, `id` and `timestamp`, which this fills) to `number`.
pub fn message_webhook(number: &str, from: &str, wamid: &str, message: Value) -> Value {
    let mut message = message;
    message["from"] = json!(from);
    message["id"] = json!(wamid);
    message["timestamp"] = json!(now_s().to_string());
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "WABA", "changes": [{ "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": { "display_phone_number": "15550000000", "phone_number_id": number },
            "contacts": [{ "profile": { "name": "Customer" }, "wa_id": from }],
            "messages": [message],
        }}]}]
    })
}

/// A text message's body for [`message_webhook`].
pub fn text_message(body: &str) -> Value {
    json!({"type": "text", "text": {"body": body}})
}

/// Posts `webhook` and waits for the next `assigned` frame on `agent`'s
/// session; returns its conversation and route.
pub async fn assigned_after(harness: &Harness, agent: &mut WsClient, webhook: &Value) -> Result<(Value, Value)> {
    let (status, _) = harness.post_webhook(webhook).await?;
    anyhow::ensure!(status == 200, "webhook answered {status}");
    let frame = agent.expect_type("assigned").await?;
    Ok((frame["conversation"].clone(), frame["route"].clone()))
}

/// Meta's webhook for one inbound text message.
pub fn inbound_text(from: &str, wamid: &str, text: &str) -> Value {
    sim::emulator::inbound_text_payload(PHONE_NUMBER_ID, from, "Customer", wamid, text, now_s(), None)
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// Polls `check` every 20 ms until it returns `Some`, up to the wait.
pub async fn eventually<T, F, Fut>(mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("condition not reached within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the engine at `base_url` until its `/readyz` answers 200.
pub async fn until_ready(http: &reqwest::Client, base_url: &str) -> Result<()> {
    eventually(|| async { (http.get(format!("{base_url}/readyz")).send().await.ok()?.status() == 200).then_some(()) })
        .await
}

/// The Cloud API emulator with the tests' token and app secret, no webhook
/// URL yet; with `send_statuses`, it posts the delivery statuses of what it
/// accepted (5 ms after).
pub async fn start_emulator(send_statuses: bool) -> Result<Emulator> {
    Emulator::start(EmulatorConfig {
        access_token: ACCESS_TOKEN.to_owned(),
        app_secret: APP_SECRET.to_owned(),
        webhook_url: None,
        status_delay_ms: 5,
        send_statuses,
    })
    .await
    .map_err(Into::into)
}

/// Starts a built `switchboard` binary (`binary`: in a test,
/// `env!("CARGO_BIN_EXE_switchboard-under-test")`) with `serve --config`;
/// returns the child and the base URL it printed once listening. Its stdout
/// is drained on a thread, so the child never blocks on a full pipe.
pub fn spawn_binary(binary: &str, config_path: &Path) -> Result<(std::process::Child, String)> {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--config"])
        .arg(config_path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let base_url = loop {
        let line = lines.next().ok_or_else(|| anyhow!("the server exited before listening"))??;
        if let Some(url) = line.strip_prefix("switchboard listening on ") {
            break url.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, base_url))
}

/// The browser scripts' folder (`tests/browser`), or what is missing to run
/// them: Chromium (`/usr/bin/chromium`, or `CHROMIUM`), Node.js and
/// `npm ci --prefix tests/browser`. `.ci/run` installs them.
pub fn browser_tools() -> Result<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        bail!("the browser test cannot run: no Chromium at {chromium} (apt-get install chromium, or set CHROMIUM)");
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|output| output.status.success()) {
        bail!("the browser test cannot run: no Node.js on PATH");
    }
    if !dir.join("node_modules/playwright-core").exists() {
        bail!("the browser test cannot run: playwright-core is not installed (npm ci --prefix tests/browser)");
    }
    Ok(dir)
}

/// Where a browser script saves its screenshots: `target/browser-screenshots/NAME`
/// (CI keeps them as artifacts).
pub fn screenshot_dir(name: &str) -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("browser-screenshots").join(name)
}

/// Runs `node SCRIPT ARGS…` in `tests/browser` (within 120 s) and fails
/// with everything it printed unless it exited 0 saying `all steps passed`.
pub async fn run_browser_script(script: &str, args: &[&str]) -> Result<String> {
    let dir = browser_tools()?;
    let run = tokio::process::Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run).await??;
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() || !printed.contains("all steps passed") {
        bail!("{script} failed:\n{printed}");
    }
    Ok(printed)
}
