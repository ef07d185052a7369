//! The demo's past: before `switchboard demo` goes live on a fresh data
//! directory, the engine itself plays a few past days of work on a manual
//! clock, so the console's reports are not empty on first open.
//!
//! Nothing is written behind the engine's back: a second engine on the same
//! data directory, its clock set to the first past day, takes signed
//! webhooks from simulated customers (ad leads, referral codes, organic
//! messages routed by the demo's rules) while its simulated agents are
//! online over the WebSocket; the agents answer, transfer and close through
//! the REST API as a client would, the clock moves between their steps, and
//! the deadlines due by then fire (so a slow first answer is a real SLA
//! breach). The event log, the audit log and the reports then hold those
//! days exactly as if they had happened, and the live engine starts on them.
//! The past is drawn from a fixed seed (the same script each time; what the
//! engine makes of it can differ a little with timing, e.g. who is free).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::clock::{Clock, ManualClock};
use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sim::emulator::{Emulator, EmulatorConfig};

use super::pick;
use crate::config::Config;
use crate::server::StartOptions;

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
/// The working day the past is played in (UTC): 09:00 to 21:00 in India.
const DAY_OPENS: i64 = 3 * HOUR + 30 * MINUTE;
const DAY_LENGTH: i64 = 12 * HOUR;

/// What was played.
pub struct Played {
    pub conversations: u32,
    pub won: u32,
    pub took: Duration,
}

/// Who plays the past: the simulated agents (id, token, teams), the
/// manager's token, the business number's id.
pub struct Cast<'a> {
    pub agents: &'a [(String, String)],
    pub manager_token: &'a str,
    pub phone_number_id: &'a str,
}

/// Plays `days` past days (the days before today, UTC) of `per_day`
/// conversations each into `config`'s data directory, which must be new.
pub async fn play(config: &Config, cast: &Cast<'_>, days: u32, per_day: u32) -> anyhow::Result<Played> {
    let started = Instant::now();
    let now = crate::server::SystemClock.now_ms();
    let first_day = now.div_euclid(DAY) * DAY - i64::from(days) * DAY;
    let clock = ManualClock::new(first_day + DAY_OPENS);
    // Its own emulator: sends are accepted, no status webhooks (they would
    // carry today's time into the past).
    let emulator = Emulator::start(EmulatorConfig {
        access_token: config.whatsapp.access_token.clone(),
        app_secret: config.whatsapp.app_secret.clone(),
        webhook_url: None,
        status_delay_ms: 0,
        send_statuses: false,
    })
    .await?;
    let mut past = config.clone();
    past.server.listen = "127.0.0.1:0".to_owned();
    past.whatsapp.graph_base_url = emulator.base_url();
    let server =
        crate::server::start(past, StartOptions { clock: clock.clone(), outbound: None, copilot: None }).await?;
    let result = async {
        let system = server.state.system().cloned().ok_or_else(|| anyhow::anyhow!("the engine did not start"))?;
        let mut stage = Stage {
            base_url: server.base_url(),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            config,
            cast,
            clock: clock.clone(),
            system,
            rng: StdRng::seed_from_u64(2026),
            played: Played { conversations: 0, won: 0, took: Duration::ZERO },
        };
        let sessions = stage.agents_online().await?;
        for day in 0..i64::from(days) {
            let opens = first_day + day * DAY + DAY_OPENS;
            for slot in 0..per_day {
                let planned = opens + DAY_LENGTH * i64::from(slot) / i64::from(per_day.max(1));
                let jitter = stage.rng.random_range(0..(DAY_LENGTH / i64::from(per_day.max(1))).max(1));
                // One conversation at a time; a long one pushes the next later,
                // never into the next day.
                let at = (planned + jitter).max(clock.now_ms_for_test()).min(opens + DAY - DAY_OPENS - HOUR);
                if at < now - HOUR {
                    clock.set(at);
                    stage.conversation(day * i64::from(per_day) + i64::from(slot)).await;
                }
            }
        }
        for session in sessions {
            session.abort();
        }
        let mut played = stage.played;
        played.took = started.elapsed();
        anyhow::Ok(played)
    }
    .await;
    server.shutdown().await;
    emulator.shutdown();
    result
}

struct Stage<'a> {
    base_url: String,
    client: reqwest::Client,
    config: &'a Config,
    cast: &'a Cast<'a>,
    clock: Arc<ManualClock>,
    system: Arc<actors::System>,
    rng: StdRng,
    played: Played,
}

/// How a past conversation began.
enum Opening {
    Ad(&'static str),
    Referral,
    Organic,
}

impl Stage<'_> {
    /// Every simulated agent online over the WebSocket, its frames drained
    /// by a task (the past is driven through the REST API).
    async fn agents_online(&mut self) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
        let mut sessions = Vec::new();
        for (_, token) in self.cast.agents {
            let (socket, _) = sim::agent::connect(&self.base_url, token, sim::agent::Protocol::Json, None).await?;
            let (mut write, mut read) = socket.split();
            let frame = json!({"type": "set_status", "id": 1, "status": "online"}).to_string();
            write.send(sim::agent::Message::Text(frame.into())).await?;
            loop {
                let Some(message) = read.next().await else { anyhow::bail!("an agent's session closed at once") };
                if let sim::agent::Message::Text(text) = message?
                    && let Ok(frame) = serde_json::from_str::<Value>(&text)
                    && frame["id"] == 1
                {
                    anyhow::ensure!(frame["type"] == "ok", "an agent could not go online: {frame}");
                    break;
                }
            }
            sessions.push(tokio::spawn(async move {
                let _write = write;
                while let Some(Ok(_)) = read.next().await {}
            }));
        }
        Ok(sessions)
    }

    /// Moves the clock and lets what fell due happen.
    async fn wait(&mut self, low: i64, high: i64) {
        self.clock.advance_ms(self.rng.random_range(low..=high));
        self.system.settle_clock().await;
    }

    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Option<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.base_url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => response.json().await.ok(),
            Ok(response) => {
                let status = response.status();
                tracing::debug!(path, %status, "demo history: a request was refused: {}", response.text().await.unwrap_or_default());
                None
            }
            Err(error) => {
                tracing::debug!(path, %error, "demo history: a request failed");
                None
            }
        }
    }

    fn token_of(&self, agent: &str) -> Option<&str> {
        self.cast.agents.iter().find(|(id, _)| id == agent).map(|(_, token)| token.as_str())
    }

    async fn customer_writes(&mut self, wa_id: &str, name: &str, text: &str, referral: Option<Value>) {
        let wamid = format!("wamid.history.{wa_id}.{}", self.clock.now_ms_for_test());
        let payload = sim::emulator::inbound_text_payload(
            self.cast.phone_number_id,
            wa_id,
            name,
            &wamid,
            text,
            self.clock.now_ms_for_test() / SECOND,
            referral,
        );
        let url = sim::webhook::webhook_url(&self.base_url);
        let secret = self.config.whatsapp.app_secret.as_bytes();
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        if let Err(error) = sim::webhook::signed_post(&self.client, &url, secret, body).send().await {
            tracing::debug!(%error, "demo history: a webhook failed");
        }
        self.system.settle_clock().await;
    }

    /// The newest conversation of `wa_id`, and who holds it.
    async fn find(&self, wa_id: &str) -> Option<(String, Option<String>)> {
        let path = format!("/api/v1/conversations?contact={wa_id}&limit=1");
        let listed = self.call(reqwest::Method::GET, &path, self.cast.manager_token, None).await?;
        let conversation = listed["conversations"].get(0)?;
        let holder = conversation["agent"].as_str().map(str::to_owned);
        Some((conversation["id"].as_str()?.to_owned(), holder))
    }

    /// Waits (in simulated minutes) until someone holds the conversation.
    async fn holder(&mut self, wa_id: &str) -> Option<(String, String)> {
        for _ in 0..5 {
            if let Some((id, Some(agent))) = self.find(wa_id).await {
                return Some((id, agent));
            }
            self.wait(MINUTE, 2 * MINUTE).await;
        }
        None
    }

    async fn agent_says(&mut self, conversation: &str, agent: &str, text: &str) -> bool {
        let Some(token) = self.token_of(agent).map(str::to_owned) else { return false };
        let path = format!("/api/v1/conversations/{conversation}/messages");
        self.call(reqwest::Method::POST, &path, &token, Some(json!({ "text": text }))).await.is_some()
    }

    /// One past conversation, from the customer's first message to its close.
    async fn conversation(&mut self, n: i64) {
        let wa_id = format!("9197{n:08}");
        let name = *pick(&mut self.rng, &super::CUSTOMER_NAMES);
        let roll: f64 = self.rng.random();
        let opening = if roll < 0.5 {
            // The three ads do differently: the first converts, the third mostly costs.
            const ADS: [&str; 7] = ["ad-1", "ad-1", "ad-2", "ad-2", "ad-3", "ad-3", "ad-3"];
            Opening::Ad(ADS[self.rng.random_range(0..ADS.len())])
        } else if roll < 0.7 {
            Opening::Referral
        } else {
            Opening::Organic
        };
        let (text, referral) = match &opening {
            Opening::Ad(ad) => (
                pick(&mut self.rng, super::AD_OPENERS).to_string(),
                Some(json!({
                    "source_url": "https://fb.me/demo",
                    "source_id": ad,
                    "source_type": "ad",
                    "headline": "Festive offer",
                    "ctwa_clid": format!("clid-history-{n}"),
                })),
            ),
            Opening::Referral => (
                format!("Hi, my friend sent me here. ref:DIWALI25 {}", pick(&mut self.rng, super::CUSTOMER_TEXTS)),
                None,
            ),
            Opening::Organic => (pick(&mut self.rng, super::CUSTOMER_TEXTS).to_string(), None),
        };
        self.customer_writes(&wa_id, name, &text, referral).await;
        self.played.conversations += 1;
        let Some((id, mut agent)) = self.holder(&wa_id).await else { return };

        // The first answer: mostly within the 5-minute target, one in five late.
        if self.rng.random_bool(0.8) {
            self.wait(20 * SECOND, 4 * MINUTE).await;
        } else {
            self.wait(5 * MINUTE + 20 * SECOND, 9 * MINUTE).await;
        }
        let reply = pick(&mut self.rng, super::AGENT_REPLIES).to_string();
        self.agent_says(&id, &agent, &reply).await;

        // Most customers write back; some wait long for the next answer.
        if self.rng.random_bool(0.7) {
            self.wait(MINUTE, 10 * MINUTE).await;
            let text = pick(&mut self.rng, super::CUSTOMER_TEXTS).to_string();
            self.customer_writes(&wa_id, name, &text, None).await;
            self.wait(30 * SECOND, 12 * MINUTE).await;
            let reply = pick(&mut self.rng, super::AGENT_REPLIES).to_string();
            self.agent_says(&id, &agent, &reply).await;
        }

        // One in ten goes to another team, which answers it.
        if self.rng.random_bool(0.1) {
            let team = if matches!(opening, Opening::Ad(_)) { "support" } else { "sales" };
            if let Some(token) = self.token_of(&agent).map(str::to_owned) {
                let path = format!("/api/v1/conversations/{id}/transfer");
                let body = json!({ "team": team, "note": "over to you" });
                self.call(reqwest::Method::POST, &path, &token, Some(body)).await;
                self.system.settle_clock().await;
                if let Some((_, Some(next))) = self.find(&wa_id).await {
                    agent = next;
                    self.wait(30 * SECOND, 6 * MINUTE).await;
                    self.agent_says(&id, &agent, "Hello, I'm taking this over. How can I help?").await;
                }
            }
        }

        self.wait(2 * MINUTE, 25 * MINUTE).await;
        let won_chance = match opening {
            Opening::Ad("ad-1") => 0.4,
            Opening::Ad("ad-2") => 0.25,
            Opening::Ad(_) => 0.06,
            Opening::Referral => 0.3,
            Opening::Organic => 0.15,
        };
        let mut fields: Value = if self.rng.random_bool(won_chance) {
            json!({ "outcome": "closed_won", "amount": 1500 * self.rng.random_range(1..=6) })
        } else {
            json!({ "outcome": *pick(&mut self.rng, &["demo_booked", "follow_up", "promise_to_pay", "not_qualified"]) })
        };
        if let Some(token) = self.token_of(&agent).map(str::to_owned) {
            let path = format!("/api/v1/conversations/{id}/close");
            let won = fields["outcome"] == "closed_won";
            let closed =
                self.call(reqwest::Method::POST, &path, &token, Some(json!({ "fields": fields.take() }))).await;
            if won && closed.is_some() {
                self.played.won += 1;
            }
        }
        self.system.settle_clock().await;
    }
}
