//! `bench/scripts/copilot-flow.toml`, appended to the harness's engine
//! configuration as `--engine-config-append` does, gives the bench's team
//! its co-pilot (the compare run with co-pilot flows on, issue #15).

use switchboard_bench::engine_process::{EngineConfigOptions, render_engine_config};

#[test]
fn the_copilot_flow_appends_to_the_harness_configuration() {
    let mut text = render_engine_config(&EngineConfigOptions {
        listen: "127.0.0.1:0".to_owned(),
        data_dir: std::env::temp_dir().join("bench-copilot-flow"),
        graph_base_url: "http://127.0.0.1:1/v23.0".to_owned(),
        agents: 2,
        capacity: 10,
        token_prefix: switchboard_bench::BENCH_AGENT_TOKEN_PREFIX.to_owned(),
        tick_ms: 1000,
    });
    text.push('\n');
    text.push_str(include_str!("../scripts/copilot-flow.toml"));
    let config = engine::config::Config::from_toml("bench copilot", &text, std::iter::empty()).expect("valid config");
    let team = config.teams.iter().find(|team| team.id == switchboard_bench::BENCH_TEAM).expect("the bench's team");
    let copilot = team.copilot.as_ref().expect("its co-pilot");
    assert_eq!(copilot.flows[0].sources, ["paid"]);
    assert_eq!(copilot.flows[0].questions[0].field, "interest");
}
