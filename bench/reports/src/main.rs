//! Measures the reports' projection (`reports::Projection`) at issue #13's
//! scale: 1,000,000 conversations over 30 days (about 10 million events),
//! 500 agents in 50 teams, 50 ads and 20 referral codes, generated from a
//! seed, fed in log order. Reports (a) events taken in per second on one
//! thread — applying them, and applying them and encoding the changed rows
//! every 4,096 events as the engine's consumer does (without its commit) —
//! and (b) each report's latency over a 30-day range whose ends fall
//! inside hours (so both day and hour buckets are merged): p50, p99 and max
//! of `--queries` runs of each.
//!
//! `cargo run --release -p switchboard-bench-reports -- [--conversations N] [--seed S] [--json]`
//!
//! A package of its own, like `bench/routing/`: it calls the projection
//! directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use actors::settings::{DispositionSpec, FieldKind, Settings, TeamSpec};
use clap::Parser;
use hdrhistogram::Histogram;
use protocol::events::{Actor, Event, EventBody};
use protocol::model::{Source, SourceKind};
use protocol::ws::{SlaKind, UnassignReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reports::query::{self, GroupBy, Range};
use reports::{DAY_MS, HOUR_MS, Projection, ReportSettings};
use serde_json::{Map, Value, json};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "switchboard-bench-reports")]
struct Arguments {
    #[arg(long, default_value_t = 1_000_000)]
    conversations: usize,
    #[arg(long, default_value_t = 30)]
    days: i64,
    #[arg(long, default_value_t = 500)]
    agents: usize,
    #[arg(long, default_value_t = 50)]
    teams: usize,
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Timed runs of each report.
    #[arg(long, default_value_t = 100)]
    queries: usize,
    /// Print the results as JSON as well.
    #[arg(long)]
    json: bool,
}

/// 2026-11-01 00:00 UTC.
const START: i64 = 1_793_491_200_000;
const SECOND: i64 = 1000;

fn settings(teams: usize) -> ReportSettings {
    let settings = Settings {
        teams: (0..teams).map(|team| TeamSpec { id: format!("team{team:02}"), ..Default::default() }).collect(),
        dispositions: vec![
            DispositionSpec {
                key: "outcome".into(),
                label: None,
                kind: FieldKind::Enum,
                options: vec!["won".into(), "lost".into()],
                required_on_close: true,
                won_values: vec!["won".into()],
                ..DispositionSpec::new("", FieldKind::Text)
            },
            DispositionSpec {
                key: "amount".into(),
                label: None,
                kind: FieldKind::Money,
                options: vec![],
                required_on_close: false,
                won_values: vec![],
                ..DispositionSpec::new("", FieldKind::Text)
            },
        ],
        ..Settings::default()
    };
    ReportSettings::from_settings(&settings).expect("valid settings")
}

/// Events waiting to be fed in time order (a conversation lasts at most a
/// few hours, so only a few hours of events wait at once).
struct Pending {
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    events: HashMap<u64, Event>,
    next: u64,
}

impl Pending {
    fn push(&mut self, event: Event) {
        self.next += 1;
        self.heap.push(Reverse((event.at, self.next)));
        self.events.insert(self.next, event);
    }

    /// The events due before `until`, in time order (then arrival order).
    fn due(&mut self, until: i64, mut feed: impl FnMut(Event)) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at >= until {
                break;
            }
            self.heap.pop();
            if let Some(event) = self.events.remove(&id) {
                feed(event);
            }
        }
    }
}

fn event(conversation: &str, at: i64, actor: Actor, body: EventBody) -> Event {
    Event { at, conversation_id: Some(conversation.to_owned()), contact: None, phone_number_id: None, actor, body }
}

/// One conversation's events: opened, routed, assigned, answered, the
/// customer back, answered again, sometimes a breach or a transfer, closed
/// (won 35 %, with an amount).
fn conversation_events(rng: &mut StdRng, arguments: &Arguments, number: usize, opened: i64) -> Vec<Event> {
    let id = format!("cv{number:012}");
    let agent_of = |rng: &mut StdRng| rng.random_range(0..arguments.agents);
    let team_of = |agent: usize| format!("team{:02}", agent % arguments.teams);
    let source = match rng.random_range(0..100) {
        0..40 => Source {
            kind: SourceKind::Paid,
            source_id: Some(format!("1200000{:08}", rng.random_range(0..50))),
            ..Source::organic()
        },
        40..50 => Source {
            kind: SourceKind::Referral,
            code: Some(format!("CODE{}", rng.random_range(0..20))),
            ..Source::organic()
        },
        _ => Source::organic(),
    };
    let customer = |wamid: String| EventBody::MessageIn { wamid, message_type: "text".into(), text: None };
    let reply =
        |n: u32| EventBody::MessageOut { id: format!("o{n}"), message_type: "text".into(), text: None, template: None };
    let mut agent = agent_of(rng);
    let mut team = team_of(agent);
    let mut at = opened;
    let mut events = vec![
        event(&id, at, Actor::Customer, EventBody::Opened { source }),
        event(&id, at, Actor::Customer, customer(format!("{id}.1"))),
        event(
            &id,
            at,
            Actor::System,
            EventBody::Routed { route: json!({"reason": "default"}), team_id: Some(team.clone()) },
        ),
    ];
    at += rng.random_range(0..60) * SECOND;
    events.push(event(
        &id,
        at,
        Actor::System,
        EventBody::Assigned { agent_id: format!("agent{agent:03}"), team_id: Some(team.clone()), route: None },
    ));
    let first_response = rng.random_range(5..900) * SECOND;
    if first_response > 300 * SECOND && rng.random_bool(0.5) {
        events.push(event(
            &id,
            at + 300 * SECOND,
            Actor::System,
            EventBody::SlaBreach { clock: SlaKind::FirstResponse, due: at + 300 * SECOND },
        ));
    }
    at += first_response;
    events.push(event(&id, at, Actor::user(format!("agent{agent:03}")), reply(1)));
    if rng.random_bool(0.7) {
        at += rng.random_range(10..600) * SECOND;
        events.push(event(&id, at, Actor::Customer, customer(format!("{id}.2"))));
        if rng.random_bool(0.15) {
            // Transferred to another agent (maybe another team).
            let from = format!("agent{agent:03}");
            events.push(event(
                &id,
                at,
                Actor::user(&from),
                EventBody::Unassigned { agent_id: from.clone(), reason: UnassignReason::Transferred },
            ));
            agent = agent_of(rng);
            team = team_of(agent);
            events.push(event(
                &id,
                at,
                Actor::System,
                EventBody::Routed { route: json!({"reason": "transfer"}), team_id: Some(team.clone()) },
            ));
            events.push(event(
                &id,
                at,
                Actor::System,
                EventBody::Assigned { agent_id: format!("agent{agent:03}"), team_id: Some(team.clone()), route: None },
            ));
        }
        at += rng.random_range(5..600) * SECOND;
        events.push(event(&id, at, Actor::user(format!("agent{agent:03}")), reply(2)));
    }
    at += rng.random_range(60..3600) * SECOND;
    let won = rng.random_bool(0.35);
    let mut fields = Map::new();
    fields.insert("outcome".into(), Value::String(if won { "won" } else { "lost" }.into()));
    if won {
        fields.insert("amount".into(), json!(rng.random_range(500..50_000)));
    }
    let holder = format!("agent{agent:03}");
    events.push(event(&id, at, Actor::user(&holder), EventBody::Closed { fields, outcome: None }));
    events.push(event(
        &id,
        at,
        Actor::user(&holder),
        EventBody::Unassigned { agent_id: holder.clone(), reason: UnassignReason::Closed },
    ));
    events
}

/// One report over a range: how many rows it has.
type Report = dyn Fn(&Projection, Range) -> usize;

fn percentiles(histogram: &Histogram<u64>) -> Value {
    let ms = |ns: u64| (ns as f64 / 1e6 * 100.0).round() / 100.0;
    json!({
        "p50_ms": ms(histogram.value_at_quantile(0.5)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "max_ms": ms(histogram.max()),
    })
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let mut rng = StdRng::seed_from_u64(arguments.seed);
    let span = arguments.days * DAY_MS;
    let mut projection = Projection::new(settings(arguments.teams));
    let mut pending = Pending { heap: BinaryHeap::new(), events: HashMap::new(), next: 0 };
    let mut events = 0u64;
    let mut rows = 0u64;
    let mut row_bytes = 0u64;
    let mut since_flush = 0u32;
    let mut apply_ns = 0u128;
    let mut encode_ns = 0u128;
    let mut apply = |projection: &mut Projection, event: Event| {
        let started = Instant::now();
        projection.apply(&event);
        apply_ns += started.elapsed().as_nanos();
        events += 1;
        since_flush += 1;
        if since_flush == 4096 {
            since_flush = 0;
            let started = Instant::now();
            let changes = projection.take_changes();
            for (key, bucket) in &changes.buckets {
                rows += 1;
                row_bytes += (serde_json::to_vec(key).map_or(0, |key| key.len())
                    + rmp_serde::to_vec_named(bucket).map_or(0, |bytes| bytes.len()))
                    as u64;
            }
            for (_, conversation) in &changes.conversations {
                rows += 1;
                row_bytes +=
                    conversation.as_ref().and_then(|c| rmp_serde::to_vec_named(c).ok()).map_or(0, |b| b.len()) as u64;
            }
            encode_ns += started.elapsed().as_nanos();
        }
    };
    let generating = Instant::now();
    for number in 0..arguments.conversations {
        let opened = START + (number as i64 * span) / arguments.conversations as i64;
        pending.due(opened, |event| apply(&mut projection, event));
        for event in conversation_events(&mut rng, &arguments, number, opened) {
            pending.push(event);
        }
    }
    pending.due(i64::MAX, |event| apply(&mut projection, event));
    let total_s = generating.elapsed().as_secs_f64();
    let apply_s = apply_ns as f64 / 1e9;
    let encode_s = encode_ns as f64 / 1e9;
    println!(
        "{} conversations, {events} events over {} days; {} buckets; generation and all: {total_s:.1} s",
        arguments.conversations,
        arguments.days,
        projection.rollups.len()
    );
    println!(
        "taken in: {:.0} events/s applying alone ({apply_s:.2} s), {:.0} events/s with the rows encoded every 4,096 ({:.2} s; {rows} rows, {:.1} MB)",
        events as f64 / apply_s,
        events as f64 / (apply_s + encode_s),
        apply_s + encode_s,
        row_bytes as f64 / 1e6
    );

    // Each report over 30 days whose ends fall inside hours.
    let five_teams: std::collections::HashSet<String> = (0..5).map(|team| format!("team{team:02}")).collect();
    let cases: [(&str, Box<Report>); 7] = [
        ("sla by agent", Box::new(|p, r| query::sla(&p.rollups, r, GroupBy::Agent, false).rows.len())),
        ("sla by team", Box::new(|p, r| query::sla(&p.rollups, r, GroupBy::Team, false).rows.len())),
        ("funnel by agent", Box::new(|p, r| query::funnel(&p.rollups, r, GroupBy::Agent, false).rows.len())),
        ("funnel by team", Box::new(|p, r| query::funnel(&p.rollups, r, GroupBy::Team, false).rows.len())),
        (
            "attribution",
            Box::new(|p, r| query::attribution(&p.rollups, r, false, &Default::default(), None).rows.len()),
        ),
        (
            "attribution, 5 teams",
            Box::new(move |p, r| {
                query::attribution(&p.rollups, r, false, &Default::default(), Some(&five_teams)).rows.len()
            }),
        ),
        ("sla by team and day", Box::new(|p, r| query::sla(&p.rollups, r, GroupBy::Team, true).rows.len())),
    ];
    let mut results = Vec::new();
    for (name, run) in &cases {
        let mut histogram = Histogram::<u64>::new(3)?;
        let mut groups = 0;
        for _ in 0..arguments.queries {
            let from = START + rng.random_range(1..24) * HOUR_MS + rng.random_range(0..3_600) * SECOND;
            let range = Range { from, to: from + 30 * DAY_MS - rng.random_range(1..24) * HOUR_MS };
            let started = Instant::now();
            groups = run(&projection, range);
            histogram.record(started.elapsed().as_nanos() as u64)?;
        }
        let figures = percentiles(&histogram);
        println!(
            "{name:>20}: {groups} rows; p50 {} ms, p99 {} ms, max {} ms",
            figures["p50_ms"], figures["p99_ms"], figures["max_ms"]
        );
        results.push(json!({"report": name, "rows": groups, "latency": figures}));
    }
    if arguments.json {
        let summary = json!({
            "conversations": arguments.conversations,
            "events": events,
            "buckets": projection.rollups.len(),
            "apply_events_per_s": events as f64 / apply_s,
            "apply_and_encode_events_per_s": events as f64 / (apply_s + encode_s),
            "rows_encoded": rows,
            "reports": results,
        });
        println!("{summary}");
    }
    Ok(())
}
