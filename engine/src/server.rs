//! Starting and stopping the engine: bind, recover, serve, shut down cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use actors::System;
use actors::clock::{Clock, SharedClock};
use actors::shared::Outbound;
use anyhow::Context;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::graph::GraphClient;
use crate::http;

/// Wall-clock time for production.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// What request handlers share.
pub struct AppState {
    pub config: Config,
    pub metrics: PrometheusHandle,
    /// Set once recovery is done; until then /readyz is 503 and traffic waits.
    pub system: OnceLock<Arc<System>>,
    /// The audit log's consumer; set with `system`.
    pub audit: OnceLock<Arc<crate::audit::AuditLog>>,
    /// The reports' consumer; set with `system`.
    pub reports: OnceLock<Arc<crate::reports::Reports>>,
    /// The outbox of deliveries to connectors; set with `system`.
    pub outbox: OnceLock<Arc<crate::outbox::Outbox>>,
    /// The broadcasts' task; set with `system`.
    pub broadcasts: OnceLock<Arc<crate::broadcasts::Broadcasts>>,
    /// The promise-to-pay follow-ups; set with `system`.
    pub followups: OnceLock<Arc<crate::followups::Followups>>,
    /// The co-pilot's agent assist (draft replies); set with `system`.
    pub suggestions: OnceLock<Arc<crate::suggestions::Suggestions>>,
    /// Flips to true when the server is stopping; sessions close on it.
    pub stopping: watch::Receiver<bool>,
    /// Webhook body bytes held at once, in KiB (`server.webhook_bytes_in_flight`).
    pub webhook_kib_in_flight: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    pub fn system(&self) -> Option<&Arc<System>> {
        self.system.get()
    }
}

/// The process-wide Prometheus recorder (installed once, shared by every
/// server in the process, e.g. in tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = crate::metrics::with_buckets(PrometheusBuilder::new()).build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only what this one sees");
            }
            crate::metrics::describe_all();
            handle
        })
        .clone()
}

/// Options that are not configuration: where time and the Graph API come from.
pub struct StartOptions {
    pub clock: SharedClock,
    /// Replaces the HTTP Graph API client (tests).
    pub outbound: Option<Arc<dyn Outbound>>,
    /// The co-pilot's model hook (docs/copilot.md); `None`: the built-in
    /// engine alone.
    pub copilot: Option<actors::CopilotHook>,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { clock: Arc::new(SystemClock), outbound: None, copilot: None }
    }
}

pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: watch::Sender<bool>,
    serving: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn system(&self) -> &Arc<System> {
        self.state.system().expect("start returns once the system is ready")
    }

    /// Stops accepting, closes sessions, lets the actors finish what they
    /// hold, flushes and closes the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.serving.await;
        if let Some(system) = self.state.system.get() {
            // The actors stop first; the audit log then takes in the last
            // events and signs them, the reports take them in; then the
            // store closes. The broadcasts and the follow-ups stop first:
            // nothing is sent or fired into actors that are stopping.
            if let Some(broadcasts) = self.state.broadcasts.get() {
                broadcasts.stop().await;
            }
            if let Some(followups) = self.state.followups.get() {
                followups.stop().await;
            }
            if let Some(suggestions) = self.state.suggestions.get() {
                suggestions.stop().await;
            }
            system.stop_actors().await;
            if let Some(outbox) = self.state.outbox.get() {
                outbox.stop().await;
            }
            if let Some(audit) = self.state.audit.get() {
                audit.stop().await;
            }
            if let Some(reports) = self.state.reports.get() {
                reports.stop().await;
            }
            system.close_store();
        }
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.serving).await.unwrap_or(Ok(()))
    }
}

/// Binds, answers /healthz at once and /readyz once recovery is done, then
/// returns the running server.
pub async fn start(config: Config, options: StartOptions) -> anyhow::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.listen_addr())
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let state = Arc::new(AppState {
        config: config.clone(),
        metrics: metrics_handle(),
        system: OnceLock::new(),
        audit: OnceLock::new(),
        reports: OnceLock::new(),
        outbox: OnceLock::new(),
        broadcasts: OnceLock::new(),
        followups: OnceLock::new(),
        suggestions: OnceLock::new(),
        stopping: stopping.clone(),
        webhook_kib_in_flight: Arc::new(tokio::sync::Semaphore::new(
            config.server.webhook_bytes_in_flight.div_ceil(1024),
        )),
    });
    let router = http::router(state.clone());
    let header_read_timeout = std::time::Duration::from_millis(config.server.header_read_timeout_ms);
    let serving = tokio::spawn(crate::serve::serve(listener, router, header_read_timeout, stopping.clone()));

    let data_dir: PathBuf = config.server.data_dir.clone();
    let outbound: Arc<dyn Outbound> = match options.outbound {
        Some(outbound) => outbound,
        None => Arc::new(
            GraphClient::new(&config.whatsapp.graph_base_url, &config.whatsapp.access_token)
                .map_err(|problem| anyhow::anyhow!("whatsapp.graph_base_url: {problem}"))?,
        ),
    };
    // Every send shares one budget (whatsapp.max_sends_per_s): agents'
    // sends are counted as they go, broadcasts take what is left.
    let budget = crate::broadcasts::SendBudget::new(config.whatsapp.max_sends_per_s, options.clock.clone());
    let graph = outbound;
    let outbound: Arc<dyn Outbound> =
        Arc::new(crate::broadcasts::PacedOutbound { inner: graph.clone(), budget: budget.clone() });
    let store_options = storage::StoreOptions {
        agent_event_retention: config.engine.agent_event_retention.max(1000),
        cache_bytes: config.engine.store_cache_mib.max(16) * 1024 * 1024,
        ..Default::default()
    };
    let key_path = config.audit_key_path();
    if let Some(parent) = key_path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let signing_key =
        audit::load_or_generate(&key_path).with_context(|| format!("audit.signing_key_file {}", key_path.display()))?;
    let started = std::time::Instant::now();
    let clock = options.clock;
    // `[copilot.model]`: the language model behind the co-pilot's hook and
    // the agent assist's drafts (a key named by `api_key_env` and unset
    // stops the start here). A hook passed in (tests) wins.
    let llm = match config.copilot.as_ref().and_then(|copilot| copilot.model.as_ref()) {
        Some(model) => Some((
            Arc::new(
                crate::copilot_llm::LlmClient::new(model, |name| std::env::var(name).ok())
                    .map_err(|error| anyhow::anyhow!("copilot.model: {error}"))?,
            ),
            model.timeout_ms,
        )),
        None => None,
    };
    let copilot = match (options.copilot, &llm) {
        (Some(hook), _) => hook,
        (None, Some((client, timeout_ms))) => actors::CopilotHook {
            model: Arc::new(crate::copilot_model::LlmModel::new(client.clone())),
            // The client gives up at its own timeout; this only bounds the wait.
            timeout_ms: timeout_ms + 500,
        },
        (None, None) => actors::CopilotHook {
            model: Arc::new(actors::copilot::NoModel),
            timeout_ms: actors::DEFAULT_COPILOT_MODEL_TIMEOUT_MS,
        },
    };
    let system =
        System::start_with_copilot(config.settings(), &data_dir, store_options, outbound, copilot, clock.clone())
            .await
            .with_context(|| format!("cannot start with data dir {}", data_dir.display()))?;
    let audit = crate::audit::AuditLog::start(
        system.shared().store.clone(),
        signing_key,
        clock.clone(),
        system.log_head(),
        std::time::Duration::from_secs(config.audit.checkpoint_every_s),
    )
    .await
    .context("cannot open the audit log")?;
    let _ = state.audit.set(Arc::new(audit));
    let report_settings = reports::ReportSettings::from_settings(&config.settings())
        .map_err(|problem| anyhow::anyhow!("the reports cannot read the configuration: {problem}"))?;
    let reports = crate::reports::Reports::start(system.shared().store.clone(), report_settings, system.log_head())
        .await
        .context("cannot open the reports")?;
    let _ = state.reports.set(Arc::new(reports));
    let system = Arc::new(system);
    let followups = crate::followups::Followups::start(
        system.shared().store.clone(),
        system.clone(),
        clock.clone(),
        system.log_head(),
    )
    .await
    .context("cannot open the follow-ups")?;
    let _ = state.followups.set(Arc::new(followups));
    // Checked when the configuration was loaded.
    let assist = config.assist_rules().map_err(|(key, problem)| anyhow::anyhow!("{key}: {problem}"))?;
    let rules: Arc<dyn crate::suggestions_draft::Drafter> =
        Arc::new(crate::suggestions_draft::RulesDrafter(Arc::new(assist)));
    let drafter: Arc<dyn crate::suggestions_draft::Drafter> = match &llm {
        Some((client, _)) => Arc::new(crate::copilot_model::LlmDrafter { rules, client: client.clone() }),
        None => rules,
    };
    let suggestions = crate::suggestions::Suggestions::start(
        system.shared().store.clone(),
        system.clone(),
        drafter,
        std::time::Duration::from_secs(config.assist.max_age_s),
        system.log_head(),
    )
    .await
    .context("cannot open the co-pilot's suggestions")?;
    let _ = state.suggestions.set(Arc::new(suggestions));
    // What the CRMs and the Conversions API read of a close: the won values
    // and the money field of the conversation's team's own schema, else the
    // global one (docs/integrations.md).
    let dispositions = crate::outbox::crm::Dispositions::from_config(
        &config.dispositions,
        config.teams.iter().filter_map(|team| Some((team.id.as_str(), team.dispositions.as_deref()?))),
    );
    let outbox = crate::outbox::Outbox::start(crate::outbox::OutboxParts {
        store: system.shared().store.clone(),
        clock: clock.clone(),
        log_head: system.log_head(),
        connectors: config.connectors.clone(),
        settings: config.outbox.clone(),
        capi: config.capi.clone().map(|capi| crate::outbox::CapiParts {
            plan: crate::outbox::capi::CapiPlan {
                waba_id: capi.waba_id.clone(),
                on_qualified: capi.on_qualified.clone(),
                on_won: capi.on_won.clone(),
                currency: capi.currency.clone(),
                dispositions: dispositions.clone(),
            },
            config: capi,
            graph_base_url: config.whatsapp.graph_base_url.clone(),
            access_token: config.whatsapp.access_token.clone(),
        }),
        dispositions,
    })
    .await
    .context("cannot open the outbox")?;
    let _ = state.outbox.set(Arc::new(outbox));
    let broadcasts = crate::broadcasts::Broadcasts::start(system.shared().store.clone(), clock.clone(), graph, budget)
        .await
        .context("cannot open the broadcasts")?;
    let _ = state.broadcasts.set(Arc::new(broadcasts));
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, %addr, "ready");
    let _ = state.system.set(system);
    Ok(RunningServer { addr, state, stop, serving })
}
