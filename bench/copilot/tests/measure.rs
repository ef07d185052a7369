//! The co-pilot bench on a few conversations of the example flow: the
//! simulated leads exercise every kind of message and every way a
//! conversation ends, each message is timed once, and the reports hold
//! the figures. No timing is asserted: CI machines are slow and shared.

use switchboard_bench_copilot::{
    EXAMPLE, Kind, Team, World, measure, report_json, report_markdown, simulate, timer_overhead_ns,
};

#[test]
fn the_bench_times_every_kind_of_message_over_simulated_leads() -> anyhow::Result<()> {
    let team = Team::from_toml(EXAMPLE)?;
    let world = World::default();
    let simulated = simulate(&team, &world, 2_000, 15);
    assert_eq!(simulated.ends.values().sum::<usize>(), 2_000, "every lead ends: {:?}", simulated.ends);
    for end in ["handoff:qualified", "handoff:asked_for_person", "handoff:unanswered", "close:not_qualified"] {
        assert!(simulated.ends.contains_key(end), "{end}: {:?}", simulated.ends);
    }
    let measured = measure(&team, &world, &simulated.samples, 20_000)?;
    assert_eq!(measured.latency_ns.len(), 20_000);
    for kind in Kind::ALL.into_iter().filter(|kind| *kind != Kind::Text) {
        assert!(measured.by_kind.get(&kind).is_some_and(|histogram| !histogram.is_empty()), "{kind:?} timed");
    }
    assert!(measured.messages_per_second > 0.0);
    let overhead = timer_overhead_ns()?;
    let flow = &team.spec.flows[0];
    let json = report_json(&simulated, &measured, &overhead, flow);
    assert_eq!(json["messages"], 20_000);
    assert!(json["per_message"]["p99_ns"].as_u64() >= json["per_message"]["p50_ns"].as_u64(), "{json}");
    let markdown = report_markdown(&simulated, &measured, &overhead, flow);
    assert!(markdown.contains("| messages | messages/s") && markdown.contains("asks for a person"), "{markdown}");
    Ok(())
}

/// The flow appended to the load harness's engine configuration for the
/// compare run with co-pilot flows on reads as a co-pilot here too.
#[test]
fn the_compare_runs_flow_reads() -> anyhow::Result<()> {
    let text = include_str!("../../scripts/copilot-flow.toml");
    let head = "[[teams]]\nid = \"bench\"\n\n[[dispositions]]\nkey = \"outcome\"\nkind = \"enum\"\noptions = [\"x\"]\n";
    let team = Team::from_toml(&format!("{head}\n{text}"))?;
    assert_eq!(team.spec.flows[0].sources, ["paid"]);
    Ok(())
}
