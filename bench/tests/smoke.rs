//! The harness's smoke scenario against an in-process engine (the `switchboard`
//! binary is not built for this package's tests): a couple of seconds at a low
//! rate, and every correctness counter must be 0 with something delivered.
//! No timing is asserted: CI machines are slow and shared.

use std::time::Duration;

use sim::sink::{GraphSink, StatusCallbacks};
use switchboard_bench::engine_process::{EngineConfigOptions, render_engine_config};
use switchboard_bench::scenarios::{self, LoadRun, RunOptions, Target};

const AGENTS: usize = 5;
const CAPACITY: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_delivers_everything_once_in_order() {
    let sink = GraphSink::start("127.0.0.1:0", true).await.expect("the sink starts");
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let text = render_engine_config(&EngineConfigOptions {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: data_dir.path().join("data"),
        graph_base_url: sink.graph_base_url(),
        agents: AGENTS,
        capacity: CAPACITY,
        token_prefix: switchboard_bench::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        tick_ms: 1000,
    });
    let config = engine::config::Config::from_toml("bench smoke", &text, std::iter::empty()).expect("valid config");
    let server = engine::server::start(config, Default::default()).await.expect("the engine starts");
    let target = Target {
        description: "in-process engine".to_owned(),
        base_url: server.base_url(),
        app_secret: switchboard_bench::BENCH_APP_SECRET.to_owned(),
        token_prefix: switchboard_bench::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        pid: None,
    };
    sink.set_callbacks(StatusCallbacks {
        webhook_url: format!("{}/webhooks/whatsapp", target.base_url),
        app_secret: target.app_secret.clone(),
    });
    let options = RunOptions {
        agents: AGENTS,
        capacity: Some(CAPACITY),
        think_time: Duration::from_millis(100),
        idle_close: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(10),
        ..RunOptions::default()
    };
    let rate = 100.0;
    let run = LoadRun::start(target, options, sink.counters.clone(), rate).await.expect("agents come online");
    let result = scenarios::smoke(run, rate, Duration::from_millis(2500)).await;
    server.shutdown().await;

    let step = &result.steps[0];
    let report = serde_json::to_string_pretty(&result).unwrap_or_default();
    assert_eq!(step.acked, step.planned, "every webhook is acknowledged: {report}");
    assert!(step.delivered > 0, "something reached the agents: {report}");
    assert_eq!(result.correctness.lost, Some(0), "{report}");
    assert_eq!(result.correctness.duplicated, 0, "{report}");
    assert_eq!(result.correctness.double_assigned, 0, "{report}");
    assert_eq!(result.correctness.out_of_order, 0, "{report}");
    assert_eq!(result.correctness.capacity_exceeded, 0, "{report}");
    assert!(result.passed, "{report}");
    assert!(step.conversations_assigned > 0, "{report}");
    assert!(step.graph_sends > 0, "agents' replies reached the sink: {report}");
}
