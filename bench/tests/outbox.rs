//! The harness's `outbox` scenario against an in-process engine with a
//! webhook connector: the backlog built behind a closed receiver is all
//! delivered once the receiver opens, then live deliveries flow, with every
//! signature valid, nothing twice and each conversation's deliveries in log
//! order. No timing is asserted: CI machines are slow and shared.

use std::time::Duration;

use sim::sink::GraphSink;
use switchboard_bench::engine_process::{EngineConfigOptions, render_engine_config};
use switchboard_bench::outbox::{self, HookReceiver, ReceiverFaults};
use switchboard_bench::scenarios::{LoadRun, RunOptions, Target};

const AGENTS: usize = 5;
const CAPACITY: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_drains_and_live_deliveries_arrive_signed_once_in_order() {
    let sink = GraphSink::start("127.0.0.1:0", false).await.expect("the sink starts");
    let receiver = HookReceiver::start().await.expect("the receiver starts");
    let data_dir = tempfile::tempdir().expect("a temporary directory");
    let mut text = render_engine_config(&EngineConfigOptions {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: data_dir.path().join("data"),
        graph_base_url: sink.graph_base_url(),
        agents: AGENTS,
        capacity: CAPACITY,
        token_prefix: switchboard_bench::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        tick_ms: 1000,
    });
    text.push('\n');
    text.push_str(&outbox::connector_toml(&receiver.url(), 4));
    let config = engine::config::Config::from_toml("bench outbox", &text, std::iter::empty()).expect("valid config");
    let server = engine::server::start(config, Default::default()).await.expect("the engine starts");
    let target = Target {
        description: "in-process engine".to_owned(),
        base_url: server.base_url(),
        app_secret: switchboard_bench::BENCH_APP_SECRET.to_owned(),
        token_prefix: switchboard_bench::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        pid: None,
    };
    let options = RunOptions {
        agents: AGENTS,
        capacity: Some(CAPACITY),
        think_time: Duration::from_millis(100),
        idle_close: Duration::from_secs(2),
        drain_timeout: Duration::from_secs(10),
        ..RunOptions::default()
    };
    let rate = 50.0;
    let base_url = target.base_url.clone();
    let mut run = LoadRun::start(target, options, sink.counters.clone(), rate).await.expect("agents come online");
    assert_eq!(receiver.accepted(), 0);
    let measured = outbox::run(&mut run, &receiver, &base_url, None, rate, Duration::from_secs(2), 4).await;
    let result = run.finish(None).await;
    server.shutdown().await;

    let measured = measured.expect("both phases end");
    let report = serde_json::to_string_pretty(&measured).unwrap_or_default();
    assert!(result.passed, "the load itself passed: {:?}", result.problems);
    // Each conversation makes at least its assignment and its close.
    assert!(measured.backlog >= 2, "{report}");
    assert!(measured.live_deliveries >= 2, "{report}");
    assert_eq!(measured.live_latency.count, measured.live_deliveries, "{report}");
    assert_eq!(receiver.accepted(), measured.backlog + measured.live_deliveries, "{report}");
    assert_eq!(measured.faults, ReceiverFaults::default(), "{report}");
    assert_eq!(measured.dead, Some(0.0), "{report}");
    assert!(outbox::problems(&measured).is_empty(), "{report}");
}
