//! Measures routing decisions (`actors::routing::route`) at the scale of
//! issue #12: 500 agents in 50 teams, 100 rules of every kind in
//! docs/routing.md, generated from a seed. Reports decisions per second on
//! one thread and each decision's latency (p50/p90/p99/p99.9/max, from
//! `Instant` around each call) for (a) a mixed workload of first messages,
//! (b) messages no rule matches (every rule tried, the worst case of first
//! match wins), and (c) the cost of building the `RoutingTable` (checking
//! the configuration, compiling its regexes).
//!
//! `cargo run --release -p switchboard-bench-routing -- [--decisions N] [--seed S] [--json]`
//!
//! A package of its own, like `bench/timers/`: it calls the routing module
//! directly, which the load harness, talking to a server only through its
//! public interfaces, never reaches into.

mod generate;

use std::hint::black_box;
use std::time::Instant;

use actors::routing::{Facts, RoutingTable, route};
use clap::Parser;
use hdrhistogram::Histogram;
use protocol::model::RouteReason;
use serde_json::json;

use generate::{Configuration, Generator, Kind, Sample, Scale, seeded};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Routing decisions per second and their latency at issue #12's scale.
#[derive(Parser, Debug)]
#[command(name = "switchboard-bench-routing")]
struct Arguments {
    /// Timed decisions per workload (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 1_000_000)]
    decisions: usize,
    /// Seed of the configuration and the messages.
    #[arg(long, default_value_t = 12)]
    seed: u64,
    #[arg(long, default_value_t = 500)]
    agents: usize,
    #[arg(long, default_value_t = 50)]
    teams: usize,
    #[arg(long, default_value_t = 100)]
    rules: usize,
    /// Distinct first messages per workload, cycled through.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Share of the mixed workload's messages made to meet one rule's
    /// conditions (drawn evenly from all rules); the rest meet none.
    #[arg(long, default_value_t = 75)]
    aimed_percent: u32,
    /// How many times to build the `RoutingTable`.
    #[arg(long, default_value_t = 50)]
    builds: usize,
    /// Print the results as JSON as well.
    #[arg(long)]
    json: bool,
}

/// One workload's numbers.
struct Measured {
    decisions: usize,
    decisions_per_second: f64,
    latency_ns: Histogram<u64>,
}

impl Measured {
    fn json(&self) -> serde_json::Value {
        let quantile = |q: f64| self.latency_ns.value_at_quantile(q);
        json!({
            "decisions": self.decisions,
            "decisions_per_second": self.decisions_per_second.round(),
            "p50_ns": quantile(0.50),
            "p90_ns": quantile(0.90),
            "p99_ns": quantile(0.99),
            "p999_ns": quantile(0.999),
            "max_ns": self.latency_ns.max(),
            "mean_ns": self.latency_ns.mean().round(),
        })
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Warms up, then runs `decisions` decisions twice over `facts` (cycled):
/// once untimed for the rate, once with `Instant` around each call.
fn measure(table: &RoutingTable, facts: &[Facts<'_>], decisions: usize) -> anyhow::Result<Measured> {
    anyhow::ensure!(!facts.is_empty(), "no messages to route");
    for index in 0..(decisions / 10).max(facts.len().min(decisions)) {
        black_box(route(black_box(&facts[index % facts.len()]), table));
    }
    let started = Instant::now();
    for index in 0..decisions {
        black_box(route(black_box(&facts[index % facts.len()]), table));
    }
    let elapsed = started.elapsed();
    let mut latency_ns = new_histogram()?;
    for index in 0..decisions {
        let one = &facts[index % facts.len()];
        let started = Instant::now();
        let routing = route(black_box(one), table);
        let nanos = started.elapsed().as_nanos() as u64;
        // The decision is dropped outside the timed span.
        black_box(routing);
        latency_ns.record(nanos.max(1))?;
    }
    Ok(Measured { decisions, decisions_per_second: decisions as f64 / elapsed.as_secs_f64(), latency_ns })
}

/// What a back-to-back pair of `Instant::now()` costs (included in every latency).
fn timer_overhead_ns() -> anyhow::Result<Histogram<u64>> {
    let mut histogram = new_histogram()?;
    for _ in 0..200_000 {
        let started = Instant::now();
        let nanos = started.elapsed().as_nanos() as u64;
        histogram.record(nanos.max(1))?;
    }
    Ok(histogram)
}

/// The parts of a no-match decision, redone here the way `routing.rs` does
/// them (its helpers are private): tokenizing the text into lowercase
/// `String`s, every `text_any` phrase and every served city compared with
/// every window of the words, every `text_regex` run. Mean ns per message.
fn anatomy(configuration: &Configuration, samples: &[Sample]) -> anyhow::Result<[f64; 3]> {
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()).map(str::to_lowercase).collect()
    };
    let phrases: Vec<Vec<String>> = configuration
        .spec
        .rules
        .iter()
        .flat_map(|rule| rule.text_any.iter())
        .map(String::as_str)
        .chain(configuration.cities())
        .map(words)
        .collect();
    let regexes = configuration
        .spec
        .rules
        .iter()
        .filter_map(|rule| rule.text_regex.as_deref())
        .map(regex::Regex::new)
        .collect::<Result<Vec<_>, _>>()?;
    let texts: Vec<&str> = samples.iter().filter_map(|sample| sample.text.as_deref()).collect();
    let rounds = 20;
    let per_message = |elapsed: std::time::Duration| elapsed.as_nanos() as f64 / (texts.len() * rounds) as f64;
    let started = Instant::now();
    for _ in 0..rounds {
        for text in &texts {
            black_box(words(black_box(text)));
        }
    }
    let tokenize = per_message(started.elapsed());
    let tokenized: Vec<Vec<String>> = texts.iter().map(|text| words(text)).collect();
    let started = Instant::now();
    for _ in 0..rounds {
        for text in &tokenized {
            let text = black_box(text);
            black_box(
                phrases
                    .iter()
                    .filter(|phrase| text.windows(phrase.len()).any(|window| window == phrase.as_slice()))
                    .count(),
            );
        }
    }
    let phrase_windows = per_message(started.elapsed());
    let started = Instant::now();
    for _ in 0..rounds {
        for text in &texts {
            black_box(regexes.iter().filter(|regex| regex.is_match(black_box(text))).count());
        }
    }
    let regex_runs = per_message(started.elapsed());
    Ok([tokenize, phrase_windows, regex_runs])
}

fn micros(nanos: u64) -> String {
    format!("{:.2}", nanos as f64 / 1000.0)
}

fn main() -> anyhow::Result<()> {
    let arguments = Arguments::parse();
    let scale = Scale { agents: arguments.agents, teams: arguments.teams, rules: arguments.rules };
    let mut rng = seeded(arguments.seed);
    let configuration = Configuration::generate(scale, &mut rng);

    // (c) Building the table, `builds` times (the spec's copy made outside the timing).
    let mut build_ns = Vec::with_capacity(arguments.builds);
    let mut table = None;
    for _ in 0..arguments.builds.max(1) {
        let spec = configuration.spec.clone();
        let started = Instant::now();
        let built = RoutingTable::new(spec, &configuration.teams, &configuration.agents, &configuration.numbers);
        build_ns.push(started.elapsed().as_nanos() as u64);
        table = Some(built.map_err(|error| anyhow::anyhow!("the generated configuration is refused: {error}"))?);
    }
    let table = table.ok_or_else(|| anyhow::anyhow!("no table built"))?;
    let first_build_ns = build_ns[0];
    let mut sorted_builds = build_ns.clone();
    sorted_builds.sort_unstable();
    let median_build_ns = sorted_builds[sorted_builds.len() / 2];
    let max_build_ns = sorted_builds[sorted_builds.len() - 1];

    let generator = Generator::new(&configuration);
    let mixed: Vec<Sample> = generator.mixed(arguments.messages, arguments.aimed_percent, &mut rng);
    let unmatched: Vec<Sample> = (0..arguments.messages).map(|_| generator.no_match(&mut rng)).collect();
    let mixed_facts: Vec<Facts<'_>> = mixed.iter().map(Sample::facts).collect();
    let unmatched_facts: Vec<Facts<'_>> = unmatched.iter().map(Sample::facts).collect();
    for facts in &unmatched_facts {
        anyhow::ensure!(route(facts, &table).route.rule.is_none(), "a no-match message matched a rule: {facts:?}");
    }

    // What the mixed workload is made of: where its messages stop in the rule list.
    let rules = configuration.spec.rules.len().max(1);
    let mut by_quarter = [0usize; 4];
    let mut none = 0usize;
    let mut owner_first = 0usize;
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for facts in &mixed_facts {
        let routing = route(facts, &table);
        if routing
            .agent
            .as_ref()
            .is_some_and(|agent| matches!(agent.route.reason, RouteReason::Owner | RouteReason::Returning))
        {
            owner_first += 1;
        }
        match routing.route.rule.as_deref() {
            Some(rule) => {
                let position = configuration.spec.rules.iter().position(|spec| spec.id == rule).unwrap_or(0);
                by_quarter[(position * 4 / rules).min(3)] += 1;
                *kinds.entry(Kind::of_rule(rule).map_or("?", Kind::name)).or_default() += 1;
            }
            None => none += 1,
        }
    }
    let share = |count: usize| 100.0 * count as f64 / mixed_facts.len().max(1) as f64;
    let words: Vec<usize> =
        mixed.iter().filter_map(|sample| sample.text.as_deref()).map(|text| text.split_whitespace().count()).collect();

    let overhead = timer_overhead_ns()?;
    let [tokenize_ns, phrase_windows_ns, regex_runs_ns] = anatomy(&configuration, &unmatched)?;
    let phrase_count: usize = configuration.spec.rules.iter().map(|rule| rule.text_any.len()).sum();
    let mixed_measured = measure(&table, &mixed_facts, arguments.decisions)?;
    let unmatched_measured = measure(&table, &unmatched_facts, arguments.decisions)?;

    let mut rule_kinds = std::collections::BTreeMap::<&str, usize>::new();
    for rule in &configuration.spec.rules {
        *rule_kinds.entry(Kind::of_rule(&rule.id).map_or("?", Kind::name)).or_default() += 1;
    }
    let owner_first_false = configuration.spec.rules.iter().filter(|rule| !rule.owner_first).count();
    let target_ns = 20_000;
    let met = mixed_measured.latency_ns.value_at_quantile(0.99) < target_ns
        && unmatched_measured.latency_ns.value_at_quantile(0.99) < target_ns;

    println!(
        "configuration (seed {}): {} agents in {} teams ({} cities over {} teams, {} dealers), {} numbers, {} rules ({}), owner_first = false on {}",
        arguments.seed,
        configuration.agents.len(),
        configuration.teams.len(),
        configuration.cities().len(),
        configuration.teams.iter().filter(|team| !team.cities.is_empty()).count(),
        configuration.dealers().len(),
        configuration.numbers.len(),
        configuration.spec.rules.len(),
        rule_kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect::<Vec<_>>().join(", "),
        owner_first_false,
    );
    println!(
        "mixed workload: {} distinct first messages ({}–{} words, mean {:.1}), matched by rules 1–25 / 26–50 / 51–75 / 76–100: {:.1} / {:.1} / {:.1} / {:.1} %, by none {:.1} %; owner or last closer offered first {:.1} %",
        mixed.len(),
        words.iter().min().unwrap_or(&0),
        words.iter().max().unwrap_or(&0),
        words.iter().sum::<usize>() as f64 / words.len().max(1) as f64,
        share(by_quarter[0]),
        share(by_quarter[1]),
        share(by_quarter[2]),
        share(by_quarter[3]),
        share(none),
        share(owner_first),
    );
    println!(
        "rule kinds that placed mixed messages: {}",
        kinds.iter().map(|(kind, count)| format!("{kind} {count}")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "timer overhead (Instant pair, included below): p50 {} ns, p99 {} ns",
        overhead.value_at_quantile(0.5),
        overhead.value_at_quantile(0.99)
    );
    println!();
    println!("| workload | decisions | decisions/s (1 thread) | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, measured) in [("mixed", &mixed_measured), ("no rule matches", &unmatched_measured)] {
        let histogram = &measured.latency_ns;
        println!(
            "| {name} | {} | {:.0} | {} | {} | {} | {} | {} |",
            measured.decisions,
            measured.decisions_per_second,
            micros(histogram.value_at_quantile(0.50)),
            micros(histogram.value_at_quantile(0.90)),
            micros(histogram.value_at_quantile(0.99)),
            micros(histogram.value_at_quantile(0.999)),
            micros(histogram.max()),
        );
    }
    println!();
    println!(
        "RoutingTable::new ({} builds): first {} µs, median {} µs, max {} µs",
        build_ns.len(),
        micros(first_build_ns),
        micros(median_build_ns),
        micros(max_build_ns)
    );
    println!(
        "of a no-match decision, redone outside routing.rs (mean per message): tokenizing {tokenize_ns:.0} ns; {phrase_count} text_any phrases and {} cities against every window of the words {phrase_windows_ns:.0} ns; {} regexes {regex_runs_ns:.0} ns",
        configuration.cities().len(),
        configuration.spec.rules.iter().filter(|rule| rule.text_regex.is_some()).count(),
    );
    println!(
        "target p99 < 20 µs at {} agents / {} rules: {}",
        scale.agents,
        scale.rules,
        if met { "met" } else { "missed" }
    );

    if arguments.json {
        let report = json!({
            "seed": arguments.seed,
            "agents": configuration.agents.len(),
            "teams": configuration.teams.len(),
            "rules": configuration.spec.rules.len(),
            "rule_kinds": rule_kinds,
            "messages": arguments.messages,
            "mixed_share_percent": {
                "rules_first_quarter": share(by_quarter[0]),
                "rules_second_quarter": share(by_quarter[1]),
                "rules_third_quarter": share(by_quarter[2]),
                "rules_last_quarter": share(by_quarter[3]),
                "no_rule": share(none),
            },
            "timer_overhead_p50_ns": overhead.value_at_quantile(0.5),
            "mixed": mixed_measured.json(),
            "no_rule_matches": unmatched_measured.json(),
            "build_table": {
                "builds": build_ns.len(),
                "first_ns": first_build_ns,
                "median_ns": median_build_ns,
                "max_ns": max_build_ns,
            },
            "no_match_parts_mean_ns": {
                "tokenize": tokenize_ns.round(),
                "phrase_windows": phrase_windows_ns.round(),
                "regexes": regex_runs_ns.round(),
            },
            "target_p99_under_20us": met,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
