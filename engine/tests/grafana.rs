//! What operators are given holds together: every metric the engine exports
//! (`switchboard_engine::metrics::all_names`) is described to the recorder, with buckets
//! when it is a histogram, and listed with its type in docs/metrics.md; the
//! Grafana dashboard (`config/grafana/switchboard.json`) imports as a
//! Grafana 10 dashboard and its queries name only metrics the engine
//! exports (a histogram only through its `_bucket`, `_sum` or `_count`).
//!
//! No server runs: a metric with no sample yet is not in a scrape, so the
//! names come from the code's own list, and the kinds from what
//! `describe_all` tells a recorder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A recorder that keeps every description it is given (a name described
/// twice is kept twice, so the test can refuse it).
#[derive(Default)]
struct Descriptions(Mutex<Vec<(String, Kind)>>);

impl Descriptions {
    fn note(&self, name: KeyName, kind: Kind) {
        self.0.lock().expect("not poisoned").push((name.as_str().to_owned(), kind));
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, name: KeyName, _unit: Option<Unit>, _help: SharedString) {
        self.note(name, Kind::Counter);
    }
    fn describe_gauge(&self, name: KeyName, _unit: Option<Unit>, _help: SharedString) {
        self.note(name, Kind::Gauge);
    }
    fn describe_histogram(&self, name: KeyName, _unit: Option<Unit>, _help: SharedString) {
        self.note(name, Kind::Histogram);
    }
    fn register_counter(&self, _key: &Key, _metadata: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Every metric the engine describes, with its kind.
fn described() -> BTreeMap<String, Kind> {
    let recorder = Descriptions::default();
    metrics::with_local_recorder(&recorder, switchboard_engine::metrics::describe_all);
    let descriptions = recorder.0.into_inner().expect("not poisoned");
    let mut kinds = BTreeMap::new();
    for (name, kind) in descriptions {
        let earlier = kinds.insert(name.clone(), kind);
        assert!(earlier.is_none(), "{name} is described twice");
    }
    kinds
}

fn repository_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {}: {error}", full.display()))
}

/// The `switchboard_…` identifiers in `text`, in order, as written.
fn metric_identifiers(text: &str) -> Vec<String> {
    let is_identifier = |character: char| character.is_ascii_alphanumeric() || character == '_' || character == ':';
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard_") {
        let starts_a_word = rest[..at].chars().next_back().is_none_or(|before| !is_identifier(before));
        let tail = &rest[at..];
        let length = tail.find(|character: char| !is_identifier(character)).unwrap_or(tail.len());
        // The bare prefix (prose: "every name starts with `switchboard_`") names nothing.
        if starts_a_word && length > "switchboard_".len() {
            found.push(tail[..length].to_owned());
        }
        rest = &tail[length..];
    }
    found
}

/// Why `identifier`, as a series a query selects, is not one the engine
/// exports: a bare histogram name or a suffix on a counter or gauge selects
/// nothing.
fn refusal(identifier: &str, kinds: &BTreeMap<String, Kind>) -> Option<String> {
    if let Some(kind) = kinds.get(identifier) {
        return (*kind == Kind::Histogram)
            .then(|| format!("{identifier} is a histogram: name its _bucket, _sum or _count"));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = identifier.strip_suffix(suffix) {
            return match kinds.get(base) {
                Some(Kind::Histogram) => None,
                Some(kind) => Some(format!("{base} is a {}, it has no {suffix} series", kind.name())),
                None => Some(format!("{identifier}: the engine exports no metric {base}")),
            };
        }
    }
    Some(format!("{identifier}: the engine exports no such metric"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

fn dashboard() -> Value {
    serde_json::from_str(&repository_file("config/grafana/switchboard.json")).expect("the dashboard is JSON")
}

/// Every PromQL query of the dashboard: panels' targets and the variables'.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut found: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .map(|target| target["expr"].as_str().expect("every target has an expr").to_owned())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["query"]["query"].as_str().or(variable["query"].as_str()) {
            found.push(query.to_owned());
        }
    }
    found
}

#[test]
fn every_exported_metric_is_described_once_and_every_histogram_has_buckets() {
    let kinds = described();
    let names = switchboard_engine::metrics::all_names();
    let listed: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
    assert_eq!(listed.len(), names.len(), "all_names lists a name twice: {names:?}");
    let described: BTreeSet<String> = kinds.keys().cloned().collect();
    assert_eq!(listed, described, "all_names and describe_all disagree");
    for name in &listed {
        assert!(name.starts_with("switchboard_"), "{name} is not prefixed switchboard_");
    }
    let histograms: BTreeSet<String> =
        kinds.iter().filter(|(_, kind)| **kind == Kind::Histogram).map(|(name, _)| name.clone()).collect();
    let bucketed: BTreeSet<String> =
        switchboard_engine::metrics::HISTOGRAM_BUCKETS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(histograms, bucketed, "every histogram, and only they, has buckets (else it renders as a summary)");
    for (name, buckets) in switchboard_engine::metrics::HISTOGRAM_BUCKETS {
        assert!(buckets.windows(2).all(|pair| pair[0] < pair[1]), "{name}'s buckets do not rise: {buckets:?}");
    }
}

#[test]
fn docs_metrics_md_lists_every_metric_with_its_type_and_no_other() {
    let kinds = described();
    let text = repository_file("docs/metrics.md");
    // The overview table: | `name` | type | labels | unit |
    let mut table = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, name, kind, ..] = cells.as_slice()
            && let Some(name) = name.strip_prefix('`').and_then(|name| name.strip_suffix('`'))
            && name.starts_with("switchboard_")
            && name.chars().all(|character| character.is_ascii_alphanumeric() || character == '_')
        {
            assert!(table.insert(name.to_owned(), kind.to_string()).is_none(), "{name} is in the table twice");
        }
    }
    for (name, kind) in &kinds {
        assert_eq!(
            table.get(name).map(String::as_str),
            Some(kind.name()),
            "docs/metrics.md's overview table must list {name} as a {}",
            kind.name()
        );
        assert!(text.contains(&format!("### `{name}`")), "docs/metrics.md has no section `### `{name}``");
    }
    let mut unknown: Vec<String> =
        metric_identifiers(&text).into_iter().filter_map(|identifier| refusal(&identifier, &kinds)).collect();
    // A histogram named bare in prose is the histogram, not a query.
    unknown.retain(|why| !why.contains("is a histogram"));
    assert!(unknown.is_empty(), "docs/metrics.md names metrics the engine does not export: {unknown:?}");
}

#[test]
fn the_dashboard_queries_only_metrics_the_engine_exports() {
    let kinds = described();
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    assert!(queries.len() >= 20, "the dashboard has its queries: {queries:?}");
    let mut refused = Vec::new();
    let mut used = BTreeSet::new();
    for query in &queries {
        let identifiers = metric_identifiers(query);
        assert!(!identifiers.is_empty(), "a query that names no Switchboard metric: {query}");
        for identifier in identifiers {
            match refusal(&identifier, &kinds) {
                Some(why) => refused.push(format!("{why}\n    in {query}")),
                None => {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|suffix| identifier.strip_suffix(suffix).filter(|base| kinds.contains_key(*base)))
                        .unwrap_or(&identifier);
                    used.insert(base.to_owned());
                }
            }
        }
    }
    assert!(refused.is_empty(), "the dashboard names what the engine does not export:\n{}", refused.join("\n"));
    // What operators asked to see (issue #13, "Operators").
    for wanted in [
        switchboard_engine::metrics::WEBHOOKS_TOTAL,
        switchboard_engine::metrics::WEBHOOK_INGEST_SECONDS,
        actors::metrics::MESSAGES_TOTAL,
        actors::metrics::QUEUE_DEPTH,
        actors::metrics::AGENTS_ONLINE,
        actors::metrics::ASSIGNMENT_SECONDS,
        actors::metrics::SLA_EVENTS_TOTAL,
        actors::metrics::WS_SESSIONS,
        actors::metrics::ACTOR_RESTARTS_TOTAL,
        actors::metrics::CONVERSATION_ACTOR_FAILURES_TOTAL,
        storage::metrics::COMMIT_SECONDS,
        storage::metrics::TABLES_FAILING,
    ] {
        assert!(used.contains(wanted), "the dashboard does not show {wanted}");
    }
}

#[test]
fn the_dashboard_imports_as_a_grafana_10_dashboard_with_a_prometheus_input() {
    let dashboard = dashboard();
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion is a number");
    assert!(schema >= 38, "schemaVersion {schema} is older than Grafana 10's (38)");
    assert!(dashboard["uid"].as_str().is_some_and(|uid| !uid.is_empty() && uid.len() <= 40), "a uid Grafana accepts");
    assert!(dashboard["title"].as_str().is_some_and(|title| !title.is_empty()));
    assert!(dashboard["id"].is_null(), "an exported dashboard has no id (Grafana gives one at import)");
    let inputs = dashboard["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|input| input["name"] == "DS_PROMETHEUS"
            && input["type"] == "datasource"
            && input["pluginId"] == "prometheus"),
        "__inputs offers DS_PROMETHEUS, a Prometheus data source: {inputs:?}"
    );
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(ids.insert(id), "two panels have id {id}");
        let position = &panel["gridPos"];
        for field in ["h", "w", "x", "y"] {
            assert!(position[field].is_u64(), "panel {title} has no gridPos.{field}");
        }
        let right = position["x"].as_u64().unwrap_or(0) + position["w"].as_u64().unwrap_or(0);
        assert!(right <= 24, "panel {title} goes past Grafana's 24 columns");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title} reads the imported data source");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        let mut references = BTreeSet::new();
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "a target of {title}");
            let reference = target["refId"].as_str().unwrap_or_else(|| panic!("a target of {title} has no refId"));
            assert!(references.insert(reference.to_owned()), "panel {title} has refId {reference} twice");
        }
    }
}

/// The PromQL a query stands for: a variable's `label_values(selector,
/// label)` is Grafana's, the series `group by (label) (selector)` lists.
fn promql_of(query: &str) -> String {
    let Some(inner) = query.strip_prefix("label_values(").and_then(|rest| rest.strip_suffix(')')) else {
        return query.to_owned();
    };
    match inner.rsplit_once(',') {
        Some((selector, label)) => format!("group by ({}) ({selector})", label.trim()),
        None => inner.to_owned(),
    }
}

/// `promtool check rules` parses PromQL: every query, with Grafana's
/// variables replaced by what they stand for, as a recording rule.
#[test]
#[ignore = "needs promtool (Debian's prometheus package); .ci/run installs it and runs this"]
fn promtool_parses_every_dashboard_query() {
    let dashboard = dashboard();
    let mut rules = String::from("groups:\n  - name: switchboard_dashboard\n    rules:\n");
    for (index, query) in queries(&dashboard).iter().enumerate() {
        let expression = promql_of(query).replace("$__rate_interval", "5m").replace("$team", ".*");
        let quoted = serde_json::to_string(&expression).expect("a string");
        rules.push_str(&format!("      - record: switchboard_dashboard_query_{index}\n        expr: {quoted}\n"));
    }
    let directory = tempfile::tempdir().expect("a temporary directory");
    let file = directory.path().join("dashboard_rules.yml");
    std::fs::write(&file, &rules).expect("rules written");
    let output = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|error| panic!("cannot run promtool (apt-get install prometheus): {error}"));
    assert!(
        output.status.success(),
        "promtool refused a dashboard query:\n{}{}\n--- rules ---\n{rules}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
