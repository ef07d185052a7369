//! Configuration (contract §1): TOML, the embedded default, environment
//! overrides, and errors that name the file, the key and what is wrong.
//! Nothing here touches the data directory.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use actors::routing::{NumberSpec, RoutingSpec};
use actors::settings::{AgentSpec, ContactWords, DispositionSpec, FieldKind, Settings, SlaSpec, TeamSpec};
use serde::Deserialize;

/// The default configuration, compiled in.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/switchboard.toml");
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub whatsapp: WhatsAppConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    #[serde(default)]
    pub engine: EngineTuning,
    #[serde(default)]
    pub teams: Vec<TeamSpec>,
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    #[serde(default)]
    pub sla: SlaSpec,
    #[serde(default)]
    pub dispositions: Vec<DispositionSpec>,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub routing: RoutingSpec,
    #[serde(default)]
    pub numbers: Vec<NumberSpec>,
    /// `[contacts]`: `opt_out_words` (default `["STOP"]`) and `opt_in_words`
    /// (default `["START"]`), PROTOCOL §8.
    #[serde(default)]
    pub contacts: ContactWords,
    /// `[[campaigns]]`: names for ads in the attribution report (docs/reports.md).
    #[serde(default)]
    pub campaigns: Vec<CampaignSpec>,
    /// `[[connectors]]`: targets of the outbox (PROTOCOL §10,
    /// docs/integrations.md).
    #[serde(default)]
    pub connectors: Vec<ConnectorSpec>,
    /// `[outbox]`: the outbox's retry schedule and rhythm.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// `[capi]`: Meta's Conversions API for business messaging (PROTOCOL
    /// §10, docs/integrations.md), a built-in target of the outbox.
    #[serde(default)]
    pub capi: Option<CapiConfig>,
    /// `[assist]`: the co-pilot's agent assist, draft replies for agents
    /// who turned it on (docs/copilot.md "Agent assist").
    #[serde(default)]
    pub assist: crate::suggestions_draft::AssistConfig,
    /// `[copilot]` (`[copilot.model]`): the co-pilot's optional language
    /// model (docs/copilot.md "Language model").
    #[serde(default)]
    pub copilot: Option<crate::copilot_llm::CopilotSection>,
}

/// `[capi]`: conversion events of paid (click-to-WhatsApp) conversations to
/// Meta's Conversions API, through the outbox as the target `capi`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapiConfig {
    /// The dataset (pixel) id events are posted to: digits.
    pub dataset_id: String,
    /// The WhatsApp Business Account id sent in `user_data`: digits.
    pub waba_id: String,
    /// The event sent when a paid conversation is qualified (first reaches an agent).
    #[serde(default = "default_on_qualified")]
    pub on_qualified: String,
    /// The event sent when a paid conversation closes won.
    #[serde(default = "default_on_won")]
    pub on_won: String,
    /// ISO 4217 code of the won event's `value` (the first `money` field).
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_connector_timeout")]
    pub timeout_ms: u64,
}

fn default_on_qualified() -> String {
    "QualifiedLead".to_owned()
}
fn default_on_won() -> String {
    "Purchase".to_owned()
}

/// The outbox target id of `[capi]` (no `[[connectors]]` may take it).
pub const CAPI_TARGET: &str = "capi";

/// `[[connectors]]`: one target of the outbox.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// Letters, digits, `_` and `-`; part of each delivery's id.
    pub id: String,
    /// `webhook`, `hubspot`, `zoho`, `freshsales` or `leadsquared`.
    pub kind: String,
    #[serde(default)]
    pub url: Option<String>,
    /// `whsec_<base64>`: the Standard Webhooks signing secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// The named CRMs' API token (not used by `webhook`); LeadSquared's is
    /// `accessKey:secretKey`.
    #[serde(default)]
    pub token: Option<String>,
    pub events: Vec<String>,
    /// Attempts before a delivery is dead.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Attempts to this connector in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// An attempt without an answer by then has failed.
    #[serde(default = "default_connector_timeout")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    12
}
fn default_max_in_flight() -> usize {
    4
}
fn default_connector_timeout() -> u64 {
    10_000
}

/// The secret and token never appear in logs or debug output.
impl fmt::Debug for ConnectorSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ConnectorSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("max_attempts", &self.max_attempts)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// `[outbox]`: exponential backoff with full jitter from `backoff_base_ms`,
/// doubling, at most `backoff_max_ms`; new events taken in and due
/// deliveries looked for every `tick_ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    #[serde(default = "default_outbox_tick")]
    pub tick_ms: u64,
}

fn default_backoff_base() -> u64 {
    1_000
}
fn default_backoff_max() -> u64 {
    3_600_000
}
fn default_outbox_tick() -> u64 {
    200
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            backoff_base_ms: default_backoff_base(),
            backoff_max_ms: default_backoff_max(),
            tick_ms: default_outbox_tick(),
        }
    }
}

/// `[[campaigns]]`: an ad (its `source_id`, Meta's ad id in a
/// Click-to-WhatsApp referral) and the name the attribution report shows.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub source_id: String,
    pub name: String,
    /// What the ad cost from `start` to `end` (whole UTC days, inclusive),
    /// in `currency`: the attribution report spreads it evenly over those
    /// days and shows the cost per closed deal.
    #[serde(default)]
    pub spend: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub end: Option<String>,
}

/// A `YYYY-MM-DD` day's first millisecond (UTC).
fn day_start(text: &str) -> Option<i64> {
    if text.len() != 10 {
        return None;
    }
    protocol::time::parse_rfc3339(&format!("{text}T00:00:00Z"))
}

impl CampaignSpec {
    /// The spend as the reports read it (checked by `validate`).
    fn spend(&self) -> Option<reports::query::Spend> {
        let from = day_start(self.start.as_deref()?)?;
        let to = day_start(self.end.as_deref()?)? + reports::DAY_MS;
        Some(reports::query::Spend { amount: self.spend?, currency: self.currency.clone()?, from, to })
    }
}

impl Config {
    /// `[[campaigns]]` as the attribution report takes them, by ad id.
    pub fn campaigns(&self) -> std::collections::HashMap<String, reports::query::Campaign> {
        self.campaigns
            .iter()
            .map(|campaign| {
                let spec = reports::query::Campaign { name: campaign.name.clone(), spend: campaign.spend() };
                (campaign.source_id.clone(), spec)
            })
            .collect()
    }
}

/// `[audit]`: the audit log's signing key and how often it signs.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The Ed25519 secret key (32 raw bytes, mode 0600) that signs
    /// checkpoints; generated at first start when absent. Default:
    /// `audit-signing.key` in the data directory.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// A checkpoint is signed this often while the log grows (and at a stop,
    /// and whenever `GET /api/v1/audit/checkpoint` is asked).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every_s: u64,
}

fn default_checkpoint_every() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { signing_key_file: None, checkpoint_every_s: default_checkpoint_every() }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub metrics_public: bool,
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// A client must send a request's headers within this time (and an idle
    /// keep-alive connection is closed after it).
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive in full within this time.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// The largest body of a REST request.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The largest webhook body (Meta batches up to about 3 MB).
    #[serde(default = "default_webhook_max_body_bytes")]
    pub webhook_max_body_bytes: usize,
    /// Webhook body bytes held at once, all requests together; past it a
    /// webhook is answered 503 at once (Meta retries).
    #[serde(default = "default_webhook_bytes_in_flight")]
    pub webhook_bytes_in_flight: usize,
    /// The largest WebSocket message (and frame) a client may send.
    #[serde(default = "default_ws_max_message_bytes")]
    pub ws_max_message_bytes: usize,
    /// A frame the client does not take within this time drops the session
    /// and resets its connection.
    #[serde(default = "default_ws_write_timeout_ms")]
    pub ws_write_timeout_ms: u64,
    /// Requests of one WebSocket session being handled at once; past it the
    /// session reads no more frames until one is answered.
    #[serde(default = "default_ws_requests_in_flight")]
    pub ws_requests_in_flight: usize,
    /// Serve the web console's pages (`dashboard.html`, `agent.html`) from
    /// this folder instead of the copies compiled in: for working on them
    /// without a rebuild (`engine/assets`).
    #[serde(default)]
    pub console_dir: Option<PathBuf>,
}

fn default_header_read_timeout_ms() -> u64 {
    30_000
}

fn default_body_read_timeout_ms() -> u64 {
    30_000
}

fn default_max_body_bytes() -> usize {
    2 << 20
}

fn default_webhook_max_body_bytes() -> usize {
    8 << 20
}

fn default_webhook_bytes_in_flight() -> usize {
    32 << 20
}

fn default_ws_max_message_bytes() -> usize {
    1 << 20
}

fn default_ws_write_timeout_ms() -> u64 {
    10_000
}

fn default_ws_requests_in_flight() -> usize {
    64
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    pub app_secret: String,
    pub verify_token: String,
    pub access_token: String,
    #[serde(default = "default_graph_base_url")]
    pub graph_base_url: String,
    /// Sends per second to the Graph API that broadcasts are paced to,
    /// agents' sends counted in first (PROTOCOL §10, docs/broadcasts.md):
    /// Meta's throughput per number, 80 by default, up to 1,000.
    #[serde(default = "default_max_sends_per_s")]
    pub max_sends_per_s: u32,
}

fn default_max_sends_per_s() -> u32 {
    80
}

fn default_graph_base_url() -> String {
    "https://graph.facebook.com/v23.0".to_owned()
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    #[serde(default = "default_grace")]
    pub grace_s: u64,
}

fn default_grace() -> u64 {
    60
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { grace_s: default_grace() }
    }
}

/// Knobs operators rarely touch (documented in docs/CONFIGURATION.md).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineTuning {
    #[serde(default = "default_passivate")]
    pub passivate_after_s: u64,
    #[serde(default = "default_tick")]
    pub tick_ms: u64,
    #[serde(default = "default_session_queue")]
    pub session_queue: usize,
    #[serde(default = "default_retention")]
    pub agent_event_retention: u64,
    #[serde(default = "default_store_cache")]
    pub store_cache_mib: usize,
}

fn default_store_cache() -> usize {
    256
}

fn default_passivate() -> u64 {
    300
}
fn default_tick() -> u64 {
    1000
}
fn default_session_queue() -> usize {
    4096
}
fn default_retention() -> u64 {
    1000
}

impl Default for EngineTuning {
    fn default() -> Self {
        EngineTuning {
            passivate_after_s: default_passivate(),
            tick_ms: default_tick(),
            session_queue: default_session_queue(),
            agent_event_retention: default_retention(),
            store_cache_mib: default_store_cache(),
        }
    }
}

/// Secrets never appear in logs or debug output.
impl fmt::Debug for Config {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Config")
            .field("listen", &self.server.listen)
            .field("data_dir", &self.server.data_dir)
            .field("graph_base_url", &self.whatsapp.graph_base_url)
            .field("teams", &self.teams.len())
            .field("agents", &self.agents.len())
            .finish_non_exhaustive()
    }
}

/// A configuration problem: where, which key, what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(formatter, "configuration error in {}: {}", self.source, self.problem)
        } else {
            write!(formatter, "configuration error in {}: `{}`: {}", self.source, self.key, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Loads `file` (or the embedded default), applies `SWITCHBOARD_*`
    /// overrides from `env`, and validates the result.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let (source, text) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
                    source: path.display().to_string(),
                    key: String::new(),
                    problem: format!("cannot read the file: {error}"),
                })?;
                (path.display().to_string(), text)
            }
            None => ("the embedded default configuration".to_owned(), EMBEDDED_DEFAULT.to_owned()),
        };
        Self::from_toml(&source, &text, env)
    }

    pub fn from_toml(
        source: &str,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|error: toml::de::Error| ConfigError {
            source: source.to_owned(),
            key: String::new(),
            problem: format!("not valid TOML: {}", error.message()),
        })?;
        let mut root = toml::Value::Table(table);
        let mut overridden = Vec::new();
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else { continue };
            if path.is_empty() {
                continue;
            }
            let keys: Vec<String> = path.split("__").map(|key| key.to_ascii_lowercase()).collect();
            apply_override(&mut root, &keys, &value).map_err(|problem| ConfigError {
                source: format!("environment variable {name}"),
                key: keys.join("."),
                problem,
            })?;
            overridden.push(name);
        }
        let source_label = if overridden.is_empty() {
            source.to_owned()
        } else {
            format!("{source} (with {})", overridden.join(", "))
        };
        let config: Config = serde_path_to_error::deserialize(root).map_err(|error| {
            let key = error.path().to_string();
            ConfigError {
                source: source_label.clone(),
                key: if key == "." { String::new() } else { key },
                problem: error.into_inner().message().to_owned(),
            }
        })?;
        config.validate().map_err(|(key, problem)| ConfigError { source: source_label, key, problem })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: &str, problem: String| Err((key.to_owned(), problem));
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return fail("server.listen", format!("{:?} is not an address like 127.0.0.1:8080", self.server.listen));
        }
        for (key, value) in [
            ("whatsapp.app_secret", &self.whatsapp.app_secret),
            ("whatsapp.verify_token", &self.whatsapp.verify_token),
            ("whatsapp.access_token", &self.whatsapp.access_token),
        ] {
            if value.trim().is_empty() {
                return fail(key, "must not be empty".to_owned());
            }
        }
        if !(1..=1000).contains(&self.whatsapp.max_sends_per_s) {
            return fail(
                "whatsapp.max_sends_per_s",
                format!(
                    "must be between 1 and 1000 (Meta's throughput per number is 80 by default, 1,000 at most), not {}",
                    self.whatsapp.max_sends_per_s
                ),
            );
        }
        let server = &self.server;
        for (key, value) in [
            ("server.header_read_timeout_ms", server.header_read_timeout_ms as usize),
            ("server.body_read_timeout_ms", server.body_read_timeout_ms as usize),
            ("server.max_body_bytes", server.max_body_bytes),
            ("server.webhook_max_body_bytes", server.webhook_max_body_bytes),
            ("server.webhook_bytes_in_flight", server.webhook_bytes_in_flight),
            ("server.ws_max_message_bytes", server.ws_max_message_bytes),
            ("server.ws_write_timeout_ms", server.ws_write_timeout_ms as usize),
            ("server.ws_requests_in_flight", server.ws_requests_in_flight),
        ] {
            if value == 0 {
                return fail(key, "must be greater than 0".to_owned());
            }
        }
        if server.webhook_bytes_in_flight < server.webhook_max_body_bytes {
            return fail(
                "server.webhook_bytes_in_flight",
                format!(
                    "{} is below server.webhook_max_body_bytes ({}): the largest webhook could never be taken",
                    server.webhook_bytes_in_flight, server.webhook_max_body_bytes
                ),
            );
        }
        if self.audit.checkpoint_every_s == 0 {
            return fail("audit.checkpoint_every_s", "must be greater than 0".to_owned());
        }
        if let Err(problem) = crate::graph::parse_base_url(&self.whatsapp.graph_base_url) {
            return fail("whatsapp.graph_base_url", problem);
        }
        let mut team_ids = HashSet::new();
        for (index, team) in self.teams.iter().enumerate() {
            if team.id.trim().is_empty() {
                return fail(&format!("teams[{index}].id"), "must not be empty".to_owned());
            }
            if !team_ids.insert(team.id.as_str()) {
                return fail(&format!("teams[{index}].id"), format!("team {:?} is defined twice", team.id));
            }
            if let Some(template) = &team.closed_template
                && (template.name.trim().is_empty() || template.language.trim().is_empty())
            {
                return fail(
                    &format!("teams[{index}].closed_template"),
                    "needs the template's `name` and `language`".to_owned(),
                );
            }
            if let Some(hours) = &team.hours
                && let Err(problem) = actors::hours::Schedule::parse(hours)
            {
                return fail(&format!("teams[{index}].hours"), problem);
            }
        }
        let mut agent_ids = HashSet::new();
        let mut token_hashes = HashSet::new();
        for (index, agent) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agents[{index}].{field}");
            // What the admin API checks of an agent too.
            if let Err((field, problem)) = actors::roster::check_spec(agent, &self.teams) {
                return fail(&key(field), problem);
            }
            if !agent_ids.insert(agent.id.as_str()) {
                return fail(&key("id"), format!("agent {:?} is defined twice", agent.id));
            }
            match (&agent.token, &agent.token_sha256) {
                (None, None) => return fail(&key("token"), "set `token` or `token_sha256`".to_owned()),
                (Some(_), Some(_)) => {
                    return fail(&key("token"), "set only one of `token` and `token_sha256`".to_owned());
                }
                (Some(token), None) if token.len() < 8 => {
                    return fail(&key("token"), "must be at least 8 characters".to_owned());
                }
                (None, Some(hash)) if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                    return fail(&key("token_sha256"), "must be 64 hex digits (the SHA-256 of the token)".to_owned());
                }
                _ => {}
            }
            if !token_hashes.insert(agent.token_hash().unwrap_or_default()) {
                return fail(&key("token"), "another agent has the same token".to_owned());
            }
        }
        if let Err(error) = self.settings().routing_table() {
            return fail(&format!("{}.{}", error.place, error.field), error.problem);
        }
        for (key, words) in
            [("contacts.opt_out_words", &self.contacts.opt_out), ("contacts.opt_in_words", &self.contacts.opt_in)]
        {
            if words.is_empty() {
                return fail(key, "needs at least one word".to_owned());
            }
            if words.iter().any(|word| word.trim().is_empty()) {
                return fail(key, "a word must not be empty".to_owned());
            }
        }
        if let Some(word) = self.contacts.opt_out.iter().find(|word| {
            self.contacts.opt_in.iter().any(|other| other.trim().to_lowercase() == word.trim().to_lowercase())
        }) {
            return fail("contacts.opt_in_words", format!("{word:?} is an opt-out word too"));
        }
        let mut campaign_ids = HashSet::new();
        for (index, campaign) in self.campaigns.iter().enumerate() {
            let key = |field: &str| format!("campaigns[{index}].{field}");
            if campaign.source_id.trim().is_empty() {
                return fail(&key("source_id"), "must not be empty (the ad's id, as Meta sends it)".to_owned());
            }
            if !campaign_ids.insert(campaign.source_id.as_str()) {
                return fail(&key("source_id"), format!("ad {:?} is named twice", campaign.source_id));
            }
            if campaign.name.trim().is_empty() {
                return fail(&key("name"), "must not be empty".to_owned());
            }
            let spend_keys = [
                campaign.spend.is_some(),
                campaign.currency.is_some(),
                campaign.start.is_some(),
                campaign.end.is_some(),
            ];
            if spend_keys.iter().any(|set| *set) && !spend_keys.iter().all(|set| *set) {
                return fail(
                    &key("spend"),
                    "an ad's spend needs all of `spend`, `currency`, `start` and `end` (the days it ran)".to_owned(),
                );
            }
            if let Some(amount) = campaign.spend
                && !(amount.is_finite() && amount >= 0.0)
            {
                return fail(&key("spend"), format!("must be an amount of 0 or more, not {amount}"));
            }
            if campaign
                .currency
                .as_ref()
                .is_some_and(|currency| currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()))
            {
                return fail(&key("currency"), "must be an ISO 4217 code such as INR or USD".to_owned());
            }
            for (field, day) in [("start", &campaign.start), ("end", &campaign.end)] {
                if let Some(day) = day
                    && day_start(day).is_none()
                {
                    return fail(&key(field), format!("must be a day as YYYY-MM-DD, not {day:?}"));
                }
            }
            if let (Some(start), Some(end)) = (&campaign.start, &campaign.end)
                && day_start(start) > day_start(end)
            {
                return fail(&key("end"), format!("{end} is before the start, {start}"));
            }
        }
        self.validate_connectors()?;
        self.assist_rules()?;
        self.validate_capi()?;
        if let Some(copilot) = &self.copilot {
            copilot.validate()?;
        }
        validate_schema(&self.dispositions, "dispositions")?;
        for (index, team) in self.teams.iter().enumerate() {
            if let Some(schema) = &team.dispositions {
                validate_schema(schema, &format!("teams[{index}].dispositions"))?;
            }
        }
        // `[teams.copilot]`: its flows against the team's schema.
        let schemas = actors::settings::Schemas { global: &self.dispositions, teams: &self.teams };
        for (index, team) in self.teams.iter().enumerate() {
            if let Some(copilot) = &team.copilot {
                actors::copilot::check(copilot, schemas.of(Some(&team.id)))
                    .map_err(|(key, problem)| (format!("teams[{index}].copilot.{key}"), problem))?;
            }
        }
        Ok(())
    }

    /// `[assist]`, compiled (checked at load, so this never fails after).
    pub fn assist_rules(&self) -> Result<crate::suggestions_draft::Assist, (String, String)> {
        let teams: Vec<&str> = self.teams.iter().map(|team| team.id.as_str()).collect();
        crate::suggestions_draft::Assist::compile(&self.assist, &teams)
    }

    /// `[[connectors]]` and `[outbox]`.
    fn validate_connectors(&self) -> Result<(), (String, String)> {
        let fail = |key: String, problem: String| Err((key, problem));
        for (key, value) in [
            ("outbox.backoff_base_ms", self.outbox.backoff_base_ms),
            ("outbox.backoff_max_ms", self.outbox.backoff_max_ms),
            ("outbox.tick_ms", self.outbox.tick_ms),
        ] {
            if value == 0 {
                return fail(key.to_owned(), "must be greater than 0".to_owned());
            }
        }
        if self.outbox.backoff_max_ms < self.outbox.backoff_base_ms {
            return fail("outbox.backoff_max_ms".to_owned(), "must not be below outbox.backoff_base_ms".to_owned());
        }
        let mut ids = HashSet::new();
        for (index, connector) in self.connectors.iter().enumerate() {
            let key = |field: &str| format!("connectors[{index}].{field}");
            let id = &connector.id;
            if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-') {
                return fail(key("id"), format!("{id:?} must be letters, digits, `_` or `-`"));
            }
            if !ids.insert(id.as_str()) {
                return fail(key("id"), format!("connector {id:?} is defined twice"));
            }
            let Some(url) = &connector.url else {
                return fail(key("url"), format!("a {} connector needs its `url`", connector.kind));
            };
            if let Err(problem) = crate::graph::parse_base_url(url) {
                return fail(key("url"), problem);
            }
            match (connector.kind.as_str(), crate::outbox::crm::Kind::parse(&connector.kind)) {
                ("webhook", _) => {
                    let Some(secret) = &connector.secret else {
                        return fail(key("secret"), "a webhook needs its signing `secret` (whsec_<base64>)".to_owned());
                    };
                    if let Err(problem) = crate::outbox::webhook::parse_secret(secret) {
                        return fail(key("secret"), problem);
                    }
                    if connector.token.is_some() {
                        return fail(key("token"), "a webhook takes no `token` (it signs with `secret`)".to_owned());
                    }
                }
                (kind, Some(crm)) => {
                    let Some(token) = &connector.token else {
                        return fail(
                            key("token"),
                            format!("a {kind} connector needs its API `token` (docs/integrations.md)"),
                        );
                    };
                    if let Err(problem) = crate::outbox::crm::check_token(crm, token) {
                        return fail(key("token"), problem);
                    }
                    if connector.secret.is_some() {
                        return fail(key("secret"), format!("a {kind} connector takes no `secret` (it sends `token`)"));
                    }
                }
                (kind, None) => {
                    return fail(
                        key("kind"),
                        format!(
                            "{kind:?} is not a connector kind; use webhook, {} (docs/integrations.md)",
                            crate::outbox::crm::Kind::NAMES.join(", ")
                        ),
                    );
                }
            }
            if connector.events.is_empty() {
                return fail(key("events"), "needs at least one event".to_owned());
            }
            if let Some(event) =
                connector.events.iter().find(|event| !crate::outbox::decide::EVENT_TYPES.contains(&event.as_str()))
            {
                return fail(
                    key("events"),
                    format!("{event:?} is not one of {}", crate::outbox::decide::EVENT_TYPES.join(", ")),
                );
            }
            if connector.max_attempts == 0 {
                return fail(key("max_attempts"), "must be at least 1".to_owned());
            }
            if connector.max_in_flight == 0 {
                return fail(key("max_in_flight"), "must be at least 1".to_owned());
            }
            if connector.timeout_ms == 0 {
                return fail(key("timeout_ms"), "must be greater than 0".to_owned());
            }
        }
        Ok(())
    }

    /// `[capi]`.
    fn validate_capi(&self) -> Result<(), (String, String)> {
        let Some(capi) = &self.capi else { return Ok(()) };
        let fail = |key: &str, problem: String| Err((format!("capi.{key}"), problem));
        for (key, value) in [("dataset_id", &capi.dataset_id), ("waba_id", &capi.waba_id)] {
            if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
                return fail(key, format!("must be Meta's numeric id (digits only), not {value:?}"));
            }
        }
        for (key, value) in [("on_qualified", &capi.on_qualified), ("on_won", &capi.on_won)] {
            if value.is_empty() || value.len() > 50 || !value.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
                return fail(
                    key,
                    format!("must be a Conversions API event name such as QualifiedLead or Purchase, not {value:?}"),
                );
            }
        }
        let has_money = self.dispositions.iter().any(|field| field.kind == FieldKind::Money);
        match &capi.currency {
            Some(currency) if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_uppercase()) => {
                return fail("currency", format!("must be an ISO 4217 code such as INR or USD, not {currency:?}"));
            }
            None if has_money || capi.on_won == "Purchase" => {
                return fail(
                    "currency",
                    format!(
                        "is needed: the {:?} event carries a value (the first `money` field), and Meta needs its currency (an ISO 4217 code such as INR)",
                        capi.on_won
                    ),
                );
            }
            _ => {}
        }
        if self.connectors.iter().any(|connector| connector.id == CAPI_TARGET) {
            return fail(
                "dataset_id",
                format!("a [[connectors]] is named {CAPI_TARGET:?}, the id [capi] uses in the outbox: rename it"),
            );
        }
        for (key, value) in [
            ("max_attempts", capi.max_attempts as u64),
            ("max_in_flight", capi.max_in_flight as u64),
            ("timeout_ms", capi.timeout_ms),
        ] {
            if value == 0 {
                return fail(key, "must be at least 1".to_owned());
            }
        }
        Ok(())
    }

    /// Placeholder secrets still in use (the engine warns about them).
    pub fn placeholder_secrets(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if self.whatsapp.app_secret.starts_with("placeholder-") {
            found.push("whatsapp.app_secret");
        }
        if self.whatsapp.verify_token.starts_with("placeholder-") {
            found.push("whatsapp.verify_token");
        }
        if self.whatsapp.access_token.starts_with("placeholder-") {
            found.push("whatsapp.access_token");
        }
        if self.agents.iter().any(|agent| agent.token.as_deref().is_some_and(|token| token.starts_with("placeholder-")))
        {
            found.push("agents[].token");
        }
        found
    }

    /// Where the audit log's signing key is (`audit.signing_key_file`).
    pub fn audit_key_path(&self) -> PathBuf {
        self.audit.signing_key_file.clone().unwrap_or_else(|| self.server.data_dir.join("audit-signing.key"))
    }

    pub fn listen_addr(&self) -> SocketAddr {
        self.server.listen.parse().expect("validated")
    }

    /// The actors' settings.
    pub fn settings(&self) -> Settings {
        Settings {
            teams: self.teams.clone(),
            agents: self.agents.clone(),
            sla: self.sla.clone(),
            dispositions: self.dispositions.clone(),
            presence_grace_ms: (self.presence.grace_s * 1000) as i64,
            passivate_after_ms: (self.engine.passivate_after_s * 1000) as i64,
            tick_ms: self.engine.tick_ms,
            session_queue: self.engine.session_queue,
            routing: self.routing.clone(),
            numbers: self.numbers.clone(),
            contact_words: self.contacts.clone(),
        }
    }
}

/// One disposition schema (`[[dispositions]]` or a team's
/// `[[teams.dispositions]]`, named by `place`): keys unique, enums with
/// options, won values among them, and a `promise` field's follow-up.
fn validate_schema(schema: &[DispositionSpec], place: &str) -> Result<(), (String, String)> {
    let mut field_keys = HashSet::new();
    for (index, field) in schema.iter().enumerate() {
        let key = |name: &str| format!("{place}[{index}].{name}");
        let fail = |name: &str, problem: String| Err((key(name), problem));
        if field.key.trim().is_empty() || field.key.contains('/') {
            return fail("key", "must not be empty nor hold `/`".to_owned());
        }
        if !field_keys.insert(field.key.as_str()) {
            return fail("key", format!("field {:?} is defined twice", field.key));
        }
        if field.kind == FieldKind::Enum && field.options.is_empty() {
            return fail("options", "an enum field needs at least one option".to_owned());
        }
        if let Some(value) = field.won_values.iter().find(|value| !field.options.contains(value)) {
            return fail("won_values", format!("{value:?} is not one of the field's options"));
        }
        if field.kind != FieldKind::Promise {
            for (name, set) in [
                ("followup_at", field.followup_at.is_some()),
                ("followup_template", field.followup_template.is_some()),
                ("paid_field", field.paid_field.is_some()),
                ("paid_values", !field.paid_values.is_empty()),
            ] {
                if set {
                    return fail(name, format!("only a field of kind \"promise\" has `{name}`"));
                }
            }
            continue;
        }
        if let Some(at) = &field.followup_at
            && actors::followups::time_of_day(at).is_none()
        {
            return fail("followup_at", format!("{at:?} is not a time of day as \"HH:MM\" (24-hour)"));
        }
        if field.followup_at.is_none() && (field.followup_template.is_some() || field.paid_field.is_some()) {
            return fail(
                "followup_at",
                "a promise with a `followup_template` or a `paid_field` needs `followup_at` (\"HH:MM\")".to_owned(),
            );
        }
        if let Some(template) = &field.followup_template {
            if template.name.trim().is_empty() || template.language.trim().is_empty() {
                return fail("followup_template", "needs the template's `name` and `language`".to_owned());
            }
            if let Err(problem) = actors::followups::check_params(&template.params) {
                return fail("followup_template.params", problem);
            }
        }
        match &field.paid_field {
            None if !field.paid_values.is_empty() => {
                return fail("paid_values", "`paid_values` needs the `paid_field` they are values of".to_owned());
            }
            None => {}
            Some(paid) => {
                let Some(paid_spec) = schema.iter().find(|other| &other.key == paid) else {
                    return fail("paid_field", format!("{paid:?} is not a field of this schema"));
                };
                if paid_spec.kind != FieldKind::Enum {
                    return fail("paid_field", format!("{paid:?} must be an enum field"));
                }
                if field.paid_values.is_empty() {
                    return fail("paid_values", "name the values of the paid field that record a payment".to_owned());
                }
                if let Some(value) = field.paid_values.iter().find(|value| !paid_spec.options.contains(value)) {
                    return fail("paid_values", format!("{value:?} is not one of {paid:?}'s options"));
                }
            }
        }
    }
    Ok(())
}

/// Sets `keys` in `table` to `raw`. An existing string stays a string; other
/// values are read as TOML (`20`, `true`, `["a","b"]`), falling back to a string.
fn apply_override(root: &mut toml::Value, keys: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut current: &mut toml::Value = root;
    for key in parents {
        current = step(current, key, true)?;
    }
    let existing = step(current, last, false).ok().map(|value| value.clone());
    let parsed = match existing {
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        _ => parse_scalar(raw),
    };
    match current {
        toml::Value::Table(table) => {
            table.insert(last.clone(), parsed);
        }
        toml::Value::Array(array) => {
            let index: usize = last.parse().map_err(|_| format!("`{last}` is not an array index"))?;
            match index.cmp(&array.len()) {
                std::cmp::Ordering::Less => array[index] = parsed,
                std::cmp::Ordering::Equal => array.push(parsed),
                std::cmp::Ordering::Greater => return Err(format!("index {index} is past the end of the array")),
            }
        }
        _ => return Err("cannot set a key inside a value that is not a table".to_owned()),
    }
    Ok(())
}

fn step<'v>(value: &'v mut toml::Value, key: &str, create: bool) -> Result<&'v mut toml::Value, String> {
    match value {
        toml::Value::Table(table) => {
            if create && !table.contains_key(key) {
                table.insert(key.to_owned(), toml::Value::Table(toml::Table::new()));
            }
            table.get_mut(key).ok_or_else(|| format!("no key `{key}`"))
        }
        toml::Value::Array(array) => {
            let index: usize = key.parse().map_err(|_| format!("`{key}` is not an array index"))?;
            if create && index == array.len() {
                array.push(toml::Value::Table(toml::Table::new()));
            }
            let length = array.len();
            array.get_mut(index).ok_or_else(|| format!("index {index} is past the end of the array (length {length})"))
        }
        _ => Err(format!("`{key}` is inside a value that is not a table")),
    }
}

fn parse_scalar(raw: &str) -> toml::Value {
    let wrapped = format!("value = {raw}");
    match wrapped.parse::<toml::Table>() {
        Ok(mut table) => table.remove("value").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert!(!config.placeholder_secrets().is_empty());
    }

    #[test]
    fn environment_overrides_keys_at_any_depth() {
        let config = Config::load(
            None,
            env(&[
                ("SWITCHBOARD_WHATSAPP__APP_SECRET", "12345"),
                ("SWITCHBOARD_SERVER__LISTEN", "127.0.0.1:0"),
                ("SWITCHBOARD_SLA__FIRST_RESPONSE_S", "42"),
                ("SWITCHBOARD_AGENTS__0__CAPACITY", "7"),
                ("OTHER_VARIABLE", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.whatsapp.app_secret, "12345", "a string key stays a string");
        assert_eq!(config.server.listen, "127.0.0.1:0");
        assert_eq!(config.sla.first_response_s, 42);
        assert_eq!(config.agents[0].capacity, Some(7));
    }

    fn error_of(text: &str, vars: &[(&str, &str)]) -> ConfigError {
        Config::from_toml("test.toml", text, env(vars)).unwrap_err()
    }

    #[test]
    fn errors_name_the_source_the_key_and_the_problem() {
        let error = error_of(EMBEDDED_DEFAULT, &[("SWITCHBOARD_SLA__FIRST_RESPONSE_S", "soon")]);
        assert_eq!(error.key, "sla.first_response_s");
        assert!(error.source.contains("SWITCHBOARD_SLA__FIRST_RESPONSE_S"), "{error}");

        let typo = EMBEDDED_DEFAULT.replace("grace_s = 60", "grace_seconds = 60");
        let error = error_of(&typo, &[]);
        assert_eq!(error.source, "test.toml");
        assert!(error.problem.contains("grace_seconds"), "{error}");

        let bad_team = EMBEDDED_DEFAULT.replace("teams = []", "teams = [\"nope\"]");
        let error = error_of(&bad_team, &[]);
        assert_eq!(error.key, "agents[0].teams");
        assert!(error.to_string().contains("nope"));

        let error = error_of("not = [toml", &[]);
        assert!(error.problem.contains("TOML"));

        let error = error_of(EMBEDDED_DEFAULT, &[("SWITCHBOARD_SERVER__LISTEN", "everywhere")]);
        assert_eq!(error.key, "server.listen");

        for pace in ["0", "1001"] {
            let error = error_of(EMBEDDED_DEFAULT, &[("SWITCHBOARD_WHATSAPP__MAX_SENDS_PER_S", pace)]);
            assert_eq!(error.key, "whatsapp.max_sends_per_s", "{error}");
            assert!(error.problem.contains("between 1 and 1000"), "{error}");
        }
        assert_eq!(Config::load(None, env(&[])).unwrap().whatsapp.max_sends_per_s, 80);
    }

    #[test]
    fn the_examples_are_valid() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|extension| extension == "toml") {
                Config::load(Some(&path), env(&[])).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                checked += 1;
            }
        }
        assert!(checked >= 3, "the examples were not found in {}", examples.display());
        let bad_hours = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/business-hours.toml"),
        )
        .unwrap()
        .replace("Asia/Kolkata", "Asia/Nowhere");
        let error = error_of(&bad_hours, &[]);
        assert_eq!(error.key, "teams[0].hours");
        assert!(error.problem.contains("Asia/Nowhere"));
    }

    /// A team's own dispositions are checked like the global ones, and the
    /// errors name the team's key; a promise's follow-up keys are checked.
    #[test]
    fn team_dispositions_and_promises_are_checked_naming_the_key() {
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/collections.toml"),
        )
        .unwrap();
        let config = Config::from_toml("collections.toml", &example, env(&[])).unwrap();
        let settings = config.settings();
        let keys = |team: &str| settings.schemas().of(Some(team)).iter().map(|f| f.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys("collections"), ["ptp_status", "promise", "collected"]);
        assert_eq!(keys("sales"), ["lead_quality", "outcome", "deal_value"]);
        assert_eq!(keys("support"), ["outcome"], "no schema of its own: the global one");
        for (from, to, key, says) in [
            (
                "kind = \"promise\"                 #",
                "kind = \"promis\"                 #",
                "teams[0].dispositions[1].kind",
                "promis",
            ),
            ("followup_at = \"10:00\"", "followup_at = \"10am\"", "teams[0].dispositions[1].followup_at", "HH:MM"),
            (
                "paid_values = [\"paid\"]",
                "paid_values = [\"settled\"]",
                "teams[0].dispositions[1].paid_values",
                "settled",
            ),
            (
                "paid_field = \"ptp_status\"",
                "paid_field = \"collected\"",
                "teams[0].dispositions[1].paid_field",
                "enum",
            ),
            ("{attributes.account}", "{balance}", "teams[0].dispositions[1].followup_template.params", "{balance}"),
            ("key = \"deal_value\"", "key = \"lead_quality\"", "teams[1].dispositions[2].key", "twice"),
            ("won_values = [\"won\"]", "won_values = [\"big\"]", "teams[1].dispositions[1].won_values", "big"),
        ] {
            assert!(example.contains(from), "{from}");
            let error = error_of(&example.replacen(from, to, 1), &[]);
            assert_eq!(error.key, key, "{from} → {to}: {error}");
            assert!(error.to_string().contains(says), "{error}");
        }
        let on_text =
            example.replacen("kind = \"money\"                   #", "kind = \"text\"\nfollowup_at = \"09:00\" #", 1);
        let error = error_of(&on_text, &[]);
        assert_eq!(error.key, "teams[0].dispositions[2].followup_at", "{error}");
    }

    /// `[teams.copilot]` is checked against the team's schema, the errors
    /// naming the key.
    #[test]
    fn copilot_flows_are_checked_naming_the_key() {
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/copilot.toml"),
        )
        .unwrap();
        let config = Config::from_toml("copilot.toml", &example, env(&[])).unwrap();
        let copilot = config.teams[0].copilot.as_ref().expect("the team's co-pilot");
        assert_eq!(copilot.flows[0].questions.len(), 4);
        for (from, to, key, says) in [
            ("field = \"timeframe\"", "field = \"when\"", "teams[0].copilot.flows[0].questions[2].field", "when"),
            (
                "value = \"over_20l\"",
                "value = \"lots\"",
                "teams[0].copilot.flows[0].questions[0].options[2].value",
                "lots",
            ),
            (
                "sources = [\"paid\"]\ngreeting",
                "sources = [\"tv\"]\ngreeting",
                "teams[0].copilot.flows[0].sources",
                "tv",
            ),
            (
                "not_qualified_fields = { outcome = \"not_qualified\" }",
                "not_qualified_fields = {}",
                "teams[0].copilot.flows[0].not_qualified_fields",
                "outcome",
            ),
            ("kind = \"number\"\nmin", "kind = \"date\"\nmin", "teams[0].copilot.flows[0].questions[3].kind", "number"),
            ("office_hours = \"wait\"", "office_hours = \"later\"", "teams[0].copilot.office_hours", "later"),
        ] {
            assert!(example.contains(from), "{from}");
            let error = Config::from_toml("copilot.toml", &example.replacen(from, to, 1), env(&[]))
                .err()
                .unwrap_or_else(|| panic!("{from} → {to} was accepted"));
            assert_eq!(error.key, key, "{from} → {to}: {error}");
            assert!(error.to_string().contains(says), "{error}");
        }
    }

    /// config/examples/routing.toml routes as its comments say.
    #[test]
    fn the_routing_example_routes_as_documented() {
        use actors::routing::{ContactFacts, Facts, Trigger, route};
        use protocol::model::{RouteReason, Source, SourceKind};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/routing.toml");
        let config = Config::load(Some(&path), env(&[])).unwrap();
        let table = config.settings().routing_table().unwrap();
        let (sales_line, service_line) = ("109876543210", "109876543299");
        let nobody = ContactFacts::default();
        let organic = Source::organic();
        let ad = |id: &str| Source { kind: SourceKind::Paid, source_id: Some(id.into()), ..Source::organic() };
        let (launch, other_ad) = (ad("120210000000000001"), ad("120219999999999999"));
        let referral = Source { kind: SourceKind::Referral, code: Some("diwali".into()), ..Source::organic() };
        let dealer = ContactFacts { dealer: Some("D107".into()), ..Default::default() };
        let owned = ContactFacts { owner: Some("asha".into()), ..Default::default() };
        // (number, text, interactive id, source, contact) → (rule, team)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a Source, &'a ContactFacts);
        type Expected<'a> = (Option<&'a str>, Option<&'a str>);
        let cases: [(Case<'_>, Expected<'_>); 9] = [
            ((service_line, None, Some("menu_emi"), &organic, &nobody), (Some("menu_payments"), Some("collections"))),
            ((sales_line, Some("my EMI bounced"), None, &organic, &nobody), (Some("payments"), Some("collections"))),
            (
                (sales_line, Some("status of twl12345678?"), None, &organic, &nobody),
                (Some("loan_account"), Some("support")),
            ),
            ((sales_line, Some("hi"), None, &organic, &dealer), (Some("dealer_customers"), Some("dealer_d107"))),
            ((sales_line, Some("hi"), None, &referral, &nobody), (Some("diwali_referrals"), Some("sales"))),
            ((sales_line, Some("price?"), None, &launch, &owned), (Some("pune_launch_ad"), Some("sales_pune"))),
            (
                (sales_line, Some("in Navi Mumbai?"), None, &other_ad, &nobody),
                (Some("ad_leads_by_city"), Some("sales_mumbai")),
            ),
            ((sales_line, Some("hello"), None, &organic, &nobody), (None, Some("sales"))),
            ((service_line, Some("hello"), None, &organic, &nobody), (None, Some("support"))),
        ];
        for ((number, text, interactive_id, source, contact), (rule, team)) in cases {
            let facts = Facts {
                trigger: Trigger::Open,
                phone_number_id: number,
                text,
                interactive_id,
                source,
                contact,
                last_closer: None,
            };
            let routing = route(&facts, &table);
            assert_eq!((routing.route.rule.as_deref(), routing.team.as_deref()), (rule, team), "{text:?} on {number}");
            if rule.is_none() {
                assert_eq!(routing.route.reason, RouteReason::Default);
            }
        }
    }

    #[test]
    fn limits_have_defaults_and_are_checked() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.server.webhook_max_body_bytes, 8 << 20);
        assert_eq!(config.server.ws_max_message_bytes, 1 << 20);
        let error = error_of(EMBEDDED_DEFAULT, &[("SWITCHBOARD_SERVER__WS_WRITE_TIMEOUT_MS", "0")]);
        assert_eq!(error.key, "server.ws_write_timeout_ms");
        let error = error_of(EMBEDDED_DEFAULT, &[("SWITCHBOARD_SERVER__WEBHOOK_BYTES_IN_FLIGHT", "1024")]);
        assert_eq!(error.key, "server.webhook_bytes_in_flight");
        assert!(error.problem.contains("webhook_max_body_bytes"), "{error}");
    }

    #[test]
    fn contact_words_have_defaults_and_are_checked() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config.settings().contact_words, ContactWords::default());
        assert_eq!(config.contacts.opt_out, ["STOP"]);
        assert_eq!(config.contacts.opt_in, ["START"]);
        let with = |section: &str| format!("{EMBEDDED_DEFAULT}\n[contacts]\n{section}\n");
        let config =
            Config::from_toml("test.toml", &with(r#"opt_out_words = ["STOP", "UNSUBSCRIBE"]"#), env(&[])).unwrap();
        assert_eq!(config.settings().contact_words.opt_out, ["STOP", "UNSUBSCRIBE"]);
        assert_eq!(config.settings().contact_words.opt_in, ["START"], "the other keeps its default");
        for (section, key) in [
            (r#"opt_out_words = []"#, "contacts.opt_out_words"),
            (r#"opt_out_words = ["STOP", " "]"#, "contacts.opt_out_words"),
            (r#"opt_in_words = [""]"#, "contacts.opt_in_words"),
            (r#"opt_in_words = ["stop"]"#, "contacts.opt_in_words"),
        ] {
            assert_eq!(error_of(&with(section), &[]).key, key, "{section}");
        }
        assert!(error_of(&with(r#"stop_words = ["STOP"]"#), &[]).problem.contains("stop_words"));
    }

    #[test]
    fn a_campaign_spend_is_complete_and_spread_over_its_days() {
        let with = |campaign: &str| {
            format!("{EMBEDDED_DEFAULT}\n[[campaigns]]\nsource_id = \"ad-1\"\nname = \"Diwali\"\n{campaign}")
        };
        let full = r#"spend = 3000.0
currency = "INR"
start = "2026-11-01"
end = "2026-11-03""#;
        let config = Config::from_toml("test.toml", &with(full), env(&[])).unwrap();
        let spend = config.campaigns()["ad-1"].spend.clone().unwrap();
        let day = reports::DAY_MS;
        assert_eq!(spend.to - spend.from, 3 * day, "start and end are inclusive whole days");
        assert_eq!(spend.within(spend.from + day, spend.from + 2 * day), 1000.0, "one day of three");
        assert_eq!(spend.within(spend.to, spend.to + day), 0.0, "nothing after the last day");
        assert_eq!(Config::from_toml("test.toml", &with(""), env(&[])).unwrap().campaigns()["ad-1"].spend, None);
        for (bad, key) in [
            ("spend = 3000.0", "campaigns[0].spend"),
            (&full.replace("3000.0", "-1.0"), "campaigns[0].spend"),
            (&full.replace("\"INR\"", "\"rupees\""), "campaigns[0].currency"),
            (&full.replace("2026-11-03", "2026-11-31"), "campaigns[0].end"),
            (&full.replace("2026-11-03", "2026-10-30"), "campaigns[0].end"),
            (&full.replace("2026-11-01", "1 Nov"), "campaigns[0].start"),
        ] {
            assert_eq!(error_of(&with(bad), &[]).key, key, "{bad}");
        }
    }

    fn with_connector(lines: &str) -> String {
        format!("{EMBEDDED_DEFAULT}\n[[connectors]]\n{lines}\n")
    }

    const WEBHOOK: &str = r#"id = "crm"
kind = "webhook"
url = "https://crm.example.com/hooks"
secret = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"
events = ["conversation.closed"]"#;

    #[test]
    fn connectors_are_checked_with_their_keys_named() {
        let config = Config::from_toml("test.toml", &with_connector(WEBHOOK), env(&[])).unwrap();
        let connector = &config.connectors[0];
        assert_eq!((connector.max_attempts, connector.max_in_flight, connector.timeout_ms), (12, 4, 10_000));
        assert_eq!(config.outbox.backoff_base_ms, 1000);

        let crm = |kind: &str, token: &str| {
            format!(
                "id = \"crm\"\nkind = \"{kind}\"\nurl = \"https://api.example.com\"\ntoken = \"{token}\"\nevents = [\"conversation.closed\"]"
            )
        };
        for kind in crate::outbox::crm::Kind::NAMES {
            let config = Config::from_toml("test.toml", &with_connector(&crm(kind, "ak:sk")), env(&[])).unwrap();
            assert_eq!(config.connectors[0].kind, kind);
            let error = error_of(&with_connector(&crm(kind, "ak:sk").replace("token = \"ak:sk\"", "")), &[]);
            assert_eq!(error.key, "connectors[0].token", "{error}");
            let error = error_of(&with_connector(&format!("{}\nsecret = \"whsec_x\"", crm(kind, "ak:sk"))), &[]);
            assert_eq!(error.key, "connectors[0].secret", "{error}");
        }
        let error = error_of(&with_connector(&crm("leadsquared", "only-one-key")), &[]);
        assert_eq!(error.key, "connectors[0].token", "{error}");
        assert!(!error.problem.contains("only-one-key"), "{error}");
        let cases = [
            (WEBHOOK.replace("webhook\"", "carrier_pigeon\""), "connectors[0].kind", "not a connector kind"),
            (WEBHOOK.replace("whsec_", "wh_"), "connectors[0].secret", "whsec_"),
            (WEBHOOK.replace("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", "whsec_AAEC"), "connectors[0].secret", "bytes"),
            (WEBHOOK.replace("https://crm.example.com/hooks", "ftp://crm"), "connectors[0].url", "http"),
            (WEBHOOK.replace("conversation.closed", "conversation.opened"), "connectors[0].events", "not one of"),
            (WEBHOOK.replace("\"crm\"", "\"c r m\""), "connectors[0].id", "letters"),
            (format!("{WEBHOOK}\nmax_attempts = 0"), "connectors[0].max_attempts", "at least 1"),
            (format!("{WEBHOOK}\nmax_in_flight = 0"), "connectors[0].max_in_flight", "at least 1"),
            (format!("{WEBHOOK}\n\n[[connectors]]\n{WEBHOOK}"), "connectors[1].id", "twice"),
        ];
        for (lines, key, problem) in cases {
            let error = error_of(&with_connector(&lines), &[]);
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(problem), "{error}");
            assert!(!error.to_string().contains("AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"), "{error}");
        }
        let error = error_of(&format!("{}\n[outbox]\nbackoff_base_ms = 0\n", with_connector(WEBHOOK)), &[]);
        assert_eq!(error.key, "outbox.backoff_base_ms");
        let shown = format!("{:?}", config.connectors);
        assert!(!shown.contains("whsec_"), "{shown}");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = Config::load(None, env(&[])).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("placeholder-app-secret"));
        assert!(!shown.contains("placeholder-admin-token"));
    }

    const CAPI: &str = "[capi]\ndataset_id = \"1234567890\"\nwaba_id = \"102290129340398\"\ncurrency = \"INR\"\n";

    #[test]
    fn capi_is_checked_with_its_keys_named() {
        let config = Config::from_toml("test.toml", &format!("{EMBEDDED_DEFAULT}\n{CAPI}"), env(&[])).unwrap();
        let capi = config.capi.as_ref().unwrap();
        assert_eq!((capi.on_qualified.as_str(), capi.on_won.as_str()), ("QualifiedLead", "Purchase"));
        assert_eq!((capi.max_attempts, capi.max_in_flight, capi.timeout_ms), (12, 4, 10_000));
        let cases = [
            (CAPI.replace("\"1234567890\"", "\"12ab\""), "capi.dataset_id", "digits"),
            (CAPI.replace("\"102290129340398\"", "\"\""), "capi.waba_id", "digits"),
            (CAPI.replace("currency = \"INR\"\n", ""), "capi.currency", "is needed"),
            (CAPI.replace("\"INR\"", "\"rupees\""), "capi.currency", "ISO 4217"),
            (format!("{CAPI}on_won = \"Big Sale!\"\n"), "capi.on_won", "event name"),
            (format!("{CAPI}max_attempts = 0\n"), "capi.max_attempts", "at least 1"),
            (format!("{CAPI}dataset = \"1\"\n"), "capi", "unknown field"),
        ];
        for (section, key, problem) in cases {
            let error = error_of(&format!("{EMBEDDED_DEFAULT}\n{section}"), &[]);
            assert!(error.key.starts_with(key), "{key}: {error}");
            assert!(error.problem.contains(problem), "{error}");
        }
        let named_capi = format!("{}\n{CAPI}", with_connector(&WEBHOOK.replace("\"crm\"", "\"capi\"")));
        let error = error_of(&named_capi, &[]);
        assert!(error.problem.contains("rename it"), "{error}");
    }
}
