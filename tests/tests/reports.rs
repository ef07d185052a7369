//! The reports (PROTOCOL §5) checked independently: a scripted stretch of a
//! day through the real server on a manual clock — two teams, an ad lead
//! won with revenue, a refund that breaches its first-response target and
//! is transferred, a referral code left open — and every figure of the
//! SLA, funnel and attribution reports compared with what the test itself
//! counted from what it sent. Then who may read them, CSV, a restart, and
//! a rebuild from the event log giving the same figures.

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::clock::{Clock, ManualClock};
use anyhow::{Result, ensure};
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::{Harness, MANAGER_TOKEN, WsClient, message_webhook, now_s, text_message};

const LINE: &str = "111000000000001";
const ADMIN_TOKEN: &str = "root-token-xyz";
const LEAD_TOKEN: &str = "lead-token-xyz";
const AD: &str = "120000000000001";
const SECOND: i64 = 1000;

fn config_text() -> String {
    format!(
        r#"
[sla]
first_response_s = 60
reassign_after_s = 0

[[numbers]]
phone_number_id = "{LINE}"
default_team = "sales"

[[teams]]
id = "sales"

[[teams]]
id = "support"

[[agents]]
id = "s1"
token = "s1-token-xyz"
teams = ["sales"]

[[agents]]
id = "p1"
token = "p1-token-xyz"
teams = ["support"]

[[agents]]
id = "boss"
role = "manager"
token = "{MANAGER_TOKEN}"

[[agents]]
id = "lead"
role = "manager"
token = "{LEAD_TOKEN}"
manages = ["support"]

[[agents]]
id = "root"
role = "admin"
token = "{ADMIN_TOKEN}"

[[routing.rules]]
id = "refunds"
text_any = ["refund"]
to_team = "support"

[[dispositions]]
key = "outcome"
kind = "enum"
options = ["won", "lost"]
required_on_close = true
won_values = ["won"]

[[dispositions]]
key = "amount"
kind = "money"

[[campaigns]]
source_id = "{AD}"
name = "Pune sale"
spend = {SPEND}
currency = "INR"
start = "{start}"
end = "{end}"
"#,
        start = utc_day(now_s() * SECOND - DAY),
        end = utc_day(now_s() * SECOND + DAY),
    )
}

/// What the ad cost over its three days (yesterday to tomorrow).
const SPEND: f64 = 3000.0;
const DAY: i64 = 86_400 * SECOND;

fn utc_day(ms: i64) -> String {
    protocol::time::format_rfc3339(ms)[..10].to_owned()
}

/// What the test counts from what it does, as docs/reports.md defines it.
#[derive(Default)]
struct Ledger {
    /// agent or team → [assigned, contacted, responded, won]
    funnel: BTreeMap<String, [u64; 4]>,
    /// agent or team → first response times (s)
    first: BTreeMap<String, Vec<f64>>,
    next: BTreeMap<String, Vec<f64>>,
    resolution: BTreeMap<String, Vec<f64>>,
    breaches_first: BTreeMap<String, u64>,
}

impl Ledger {
    fn stage(&mut self, groups: &[&str], stage: usize) {
        for group in groups {
            self.funnel.entry((*group).to_owned()).or_default()[stage] += 1;
        }
    }
    fn time(map: &mut BTreeMap<String, Vec<f64>>, groups: &[&str], seconds: i64) {
        for group in groups {
            map.entry((*group).to_owned()).or_default().push(seconds as f64);
        }
    }
}

struct Day {
    harness: Harness,
    clock: Arc<ManualClock>,
}

impl Day {
    async fn customer(&self, from: &str, wamid: &str, body: &str, referral: Option<Value>) -> Result<()> {
        let mut message = text_message(body);
        if let Some(referral) = referral {
            message["referral"] = referral;
        }
        let (status, answer) = self.harness.post_webhook(&message_webhook(LINE, from, wamid, message)).await?;
        ensure!(status == 200, "webhook: {status} {answer}");
        Ok(())
    }

    fn advance(&self, seconds: i64) {
        self.clock.advance_ms(seconds * SECOND);
    }

    async fn report(&self, path: &str, token: &str) -> Result<(u16, Value)> {
        self.harness.get(path, token).await
    }
}

async fn request(agent: &mut WsClient, frame: Value) -> Result<Value> {
    let answer = agent.request(frame.clone()).await?;
    ensure!(answer["type"] == "ok", "{frame} answered {answer}");
    Ok(answer)
}

fn row<'a>(rows: &'a Value, key: &str, id: &str) -> &'a Value {
    rows["rows"].as_array().and_then(|rows| rows.iter().find(|row| row[key] == id)).unwrap_or(&Value::Null)
}

/// Every figure of the three reports against the ledger.
async fn check_reports(day: &Day, ledger: &Ledger, range: &str) -> Result<()> {
    for (group_by, ids) in [("agent", ["s1", "p1"]), ("team", ["sales", "support"])] {
        let (status, funnel) =
            day.report(&format!("/api/v1/reports/funnel?{range}&group_by={group_by}"), MANAGER_TOKEN).await?;
        ensure!(status == 200, "funnel: {funnel}");
        let (status, sla) =
            day.report(&format!("/api/v1/reports/sla?{range}&group_by={group_by}"), MANAGER_TOKEN).await?;
        ensure!(status == 200, "sla: {sla}");
        for id in ids {
            let counted = ledger.funnel.get(id).copied().unwrap_or_default();
            let got = row(&funnel, group_by, id);
            let figures =
                ["assigned", "contacted", "responded", "closed"].map(|stage| got[stage].as_u64().unwrap_or(0));
            assert_eq!(figures, counted, "funnel of {id}: {got}");
            let got = row(&sla, group_by, id);
            for (name, counted) in [("frt", &ledger.first), ("nrt", &ledger.next), ("trt", &ledger.resolution)] {
                let values = counted.get(id).cloned().unwrap_or_default();
                assert_eq!(got[name]["count"], json!(values.len()), "{name} of {id}: {got}");
                if !values.is_empty() {
                    let mean = values.iter().sum::<f64>() / values.len() as f64;
                    let mut sorted = values.clone();
                    sorted.sort_by(f64::total_cmp);
                    let p50 = sorted[(0.5 * (sorted.len() - 1) as f64).floor() as usize];
                    assert_eq!(
                        (got[name]["mean_s"].as_f64(), got[name]["p50_s"].as_f64()),
                        (Some(mean), Some(p50)),
                        "{name} of {id}: {got}"
                    );
                }
            }
            let breaches = ledger.breaches_first.get(id).copied().unwrap_or(0);
            assert_eq!(got["breaches"]["first_response"], json!(breaches), "breaches of {id}: {got}");
        }
    }
    let (status, attribution) = day.report(&format!("/api/v1/reports/attribution?{range}"), MANAGER_TOKEN).await?;
    ensure!(status == 200, "attribution: {attribution}");
    let rows = attribution["rows"].as_array().cloned().unwrap_or_default();
    let find = |source: &str| rows.iter().find(|row| row["source"] == source).cloned().unwrap_or(Value::Null);
    let paid = find("paid");
    assert_eq!(
        (
            &paid["source_id"],
            &paid["campaign"],
            &paid["conversations"],
            &paid["qualified"],
            &paid["closed"],
            &paid["revenue"]
        ),
        (&json!(AD), &json!("Pune sale"), &json!(1), &json!(1), &json!(1), &json!(5000.0)),
        "{attribution}"
    );
    // The spend in the range the report covers (whole hours): a third of
    // the amount a day, and the one deal won cost all of it.
    let covered = ["from", "to"].map(|end| protocol::time::parse_rfc3339(attribution[end].as_str().unwrap()).unwrap());
    let spend = ((SPEND / 3.0 * (covered[1] - covered[0]) as f64 / DAY as f64) * 100.0).round() / 100.0;
    assert_eq!(
        (&paid["spend"], &paid["currency"], &paid["cost_per_closed"]),
        (&json!(spend), &json!("INR"), &json!(spend)),
        "{attribution}"
    );
    let organic = find("organic");
    assert_eq!(
        (&organic["conversations"], &organic["qualified"], &organic["closed"]),
        (&json!(1), &json!(1), &json!(0))
    );
    let referral = find("referral");
    assert_eq!(
        (&referral["code"], &referral["conversations"], &referral["closed"]),
        (&json!("DIWALI"), &json!(1), &json!(0))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_day_reads_back_exactly_in_every_report() -> Result<()> {
    let clock = ManualClock::new(now_s() * 1000);
    let options = StartOptions { clock: clock.clone(), outbound: None, copilot: None };
    let harness = Harness::start_on_with(options, "reports test", &config_text()).await?;
    let mut day = Day { harness, clock };
    let started = day.clock.now_ms();
    let mut ledger = Ledger::default();
    let mut s1 = day.harness.online_agent("s1").await?;
    let mut p1 = day.harness.online_agent("p1").await?;

    // A: an ad lead, answered in 30 s, answers back, answered again in 20 s, won for 5000.
    let ad = json!({"source_url": "https://fb.me/x", "source_type": "ad", "source_id": AD, "ctwa_clid": "clid-1"});
    day.customer("919500000001", "wamid.a.1", "price of the blue one?", Some(ad)).await?;
    let a = s1.expect_type("assigned").await?["conversation"]["id"].as_str().unwrap().to_owned();
    ledger.stage(&["s1", "sales"], 0);
    day.advance(30);
    request(&mut s1, json!({"type": "send", "conversation_id": a, "text": "5,000 with delivery"})).await?;
    Ledger::time(&mut ledger.first, &["s1", "sales"], 30);
    ledger.stage(&["s1", "sales"], 1);
    day.advance(10);
    day.customer("919500000001", "wamid.a.2", "ok, book it", None).await?;
    s1.expect_type("message").await?;
    ledger.stage(&["s1", "sales"], 2);
    day.advance(20);
    request(&mut s1, json!({"type": "send", "conversation_id": a, "text": "booked!"})).await?;
    Ledger::time(&mut ledger.next, &["s1", "sales"], 20);
    request(&mut s1, json!({"type": "close", "conversation_id": a, "fields": {"outcome": "won", "amount": 5000}}))
        .await?;
    Ledger::time(&mut ledger.resolution, &["s1", "sales"], 60);
    ledger.stage(&["s1", "sales"], 3);

    // B: a refund to support; nobody answers for 61 s (a breach), then p1 does and
    // transfers it to sales, where s1 writes and closes it lost.
    day.customer("919500000002", "wamid.b.1", "I want a refund", None).await?;
    let b = p1.expect_type("assigned").await?["conversation"]["id"].as_str().unwrap().to_owned();
    ledger.stage(&["p1", "support"], 0);
    day.advance(61);
    day.harness.system().settle_clock().await;
    p1.expect_where(|frame| frame["type"] == "sla" && frame["state"] == "breached").await?;
    *ledger.breaches_first.entry("p1".into()).or_default() += 1;
    *ledger.breaches_first.entry("support".into()).or_default() += 1;
    request(&mut p1, json!({"type": "send", "conversation_id": b, "text": "Sorry for the wait"})).await?;
    Ledger::time(&mut ledger.first, &["p1", "support"], 61);
    ledger.stage(&["p1", "support"], 1);
    request(&mut p1, json!({"type": "transfer", "conversation_id": b, "team": "sales"})).await?;
    s1.expect_type("assigned").await?;
    ledger.stage(&["s1", "sales"], 0);
    day.advance(5);
    request(&mut s1, json!({"type": "send", "conversation_id": b, "text": "I can help with that"})).await?;
    ledger.stage(&["s1", "sales"], 1);
    day.advance(4);
    request(&mut s1, json!({"type": "close", "conversation_id": b, "fields": {"outcome": "lost"}})).await?;
    Ledger::time(&mut ledger.resolution, &["s1", "sales"], 61 + 5 + 4);

    // C: a referral code, given to s1, left open.
    day.customer("919500000003", "wamid.c.1", "hi ref:DIWALI", None).await?;
    s1.expect_type("assigned").await?;
    ledger.stage(&["s1", "sales"], 0);

    let range = format!(
        "from={}&to={}",
        protocol::time::format_rfc3339(started - 3_600_000),
        protocol::time::format_rfc3339(day.clock.now_ms() + 3_600_000)
    );
    check_reports(&day, &ledger, &range).await?;

    // Who may read them.
    let path = format!("/api/v1/reports/funnel?{range}&group_by=team");
    let (status, _) = day.report(&path, "s1-token-xyz").await?;
    assert_eq!(status, 403, "agents do not");
    let (status, scoped) = day.report(&path, LEAD_TOKEN).await?;
    assert_eq!(status, 200);
    let teams: Vec<&str> = scoped["rows"].as_array().unwrap().iter().filter_map(|row| row["team"].as_str()).collect();
    assert_eq!(teams, ["support"], "a manager limited to support sees support: {scoped}");
    // Attribution for a manager limited to support: what first went to support
    // (B, organic), not the ad lead or the referral that went to sales.
    let (status, scoped) = day.report(&format!("/api/v1/reports/attribution?{range}"), LEAD_TOKEN).await?;
    assert_eq!(status, 200, "{scoped}");
    let rows = scoped["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{scoped}");
    assert_eq!(
        (&rows[0]["source"], &rows[0]["conversations"], &rows[0]["qualified"], &rows[0]["closed"]),
        (&json!("organic"), &json!(1), &json!(1), &json!(0)),
        "{scoped}"
    );
    let (status, refusal) = day.report("/api/v1/reports/sla?group_by=contact", MANAGER_TOKEN).await?;
    assert_eq!((status, refusal["code"].as_str()), (400, Some("bad_request")), "{refusal}");

    // CSV: a header row of the same field names, one row per group.
    let response = day
        .harness
        .http
        .get(format!("{}/api/v1/reports/funnel?{range}&group_by=agent&format=csv", day.harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = response.text().await?;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("agent,assigned,closed,contacted,conversion."), "{csv}");
    assert!(lines.contains(&"p1,1,0,1,,1.0,0.0,0"), "{csv}");

    // Kept across a restart, and the same when rebuilt from the event log.
    s1.close().await;
    p1.close().await;
    let clock = day.clock.clone();
    day.harness.restart(StartOptions { clock: clock.clone(), outbound: None, copilot: None }).await?;
    check_reports(&day, &ledger, &range).await?;
    let server = day.harness.server.take().expect("running");
    let config = server.state.config.clone();
    server.shutdown().await;
    let store =
        Arc::new(storage::Store::open(&config.server.data_dir, Default::default(), Arc::new(storage::NullSink))?);
    let settings = reports::ReportSettings::from_settings(&config.settings()).map_err(anyhow::Error::msg)?;
    let (events, _) = engine::reports::rebuild(store.clone(), settings).await?;
    store.shutdown();
    drop(store);
    assert!(events > 20, "the whole log was projected again: {events} events");
    let mut config = config;
    config.server.listen = "127.0.0.1:0".to_owned();
    let server =
        engine::server::start(config.clone(), StartOptions { clock: clock.clone(), outbound: None, copilot: None })
            .await?;
    day.harness.server = Some(server);
    check_reports(&day, &ledger, &range).await?;

    // A projection stored by another version (here: one that counted
    // nothing) is projected again from the log at start.
    let server = day.harness.server.take().expect("running");
    server.shutdown().await;
    let store =
        Arc::new(storage::Store::open(&config.server.data_dir, Default::default(), Arc::new(storage::NullSink))?);
    let mut rows = Vec::new();
    store.reader().caught_up().await?.report_rows(|key, _| {
        rows.push((key.to_owned(), None));
        Ok(())
    })?;
    rows.push(("v".to_owned(), Some(b"1".to_vec())));
    store.commit(vec![storage::Op::PutReportRows(rows)]).await?;
    store.shutdown();
    drop(store);
    let server = engine::server::start(config, StartOptions { clock, outbound: None, copilot: None }).await?;
    day.harness.server = Some(server);
    check_reports(&day, &ledger, &range).await?;
    day.harness.shutdown().await;
    Ok(())
}
