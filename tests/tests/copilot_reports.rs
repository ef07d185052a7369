//! The co-pilot in the reports (issue #15 item 6, docs/reports.md
//! "Co-pilot"), black-box: the real server with a `[teams.copilot]` flow
//! for paid leads (the configuration of tests/tests/copilot.rs), signed
//! webhooks, on a manual clock.
//!
//! Two ad leads and an organic one while no agent is online: one answers
//! the three questions (45 s on the manual clock) and is qualified, one
//! says "talk to a human". `GET /api/v1/reports/copilot` shows the
//! conversations the co-pilot took, the qualified count and rate, the time
//! to qualification, the hand-overs by reason; attribution counts the
//! co-pilot-qualified lead as `qualified` while it waits in the queue, and
//! once only after an agent takes it.

use std::sync::Arc;

use actors::clock::ManualClock;
use engine::server::StartOptions;
use serde_json::{Value, json};
use switchboard_tests::copilot::{AD, FLOW, ad_click, say, sends, tap};
use switchboard_tests::{Harness, MANAGER_TOKEN, eventually, now_s};

type TestResult = anyhow::Result<()>;

const SALES_LEAD: &str = "sales-lead-token-xyz";
const SUPPORT_LEAD: &str = "support-lead-token-xyz";

/// After the shared flow: the number's team, a support team and a manager
/// limited to each team.
const MORE: &str = r#"
[[numbers]]
phone_number_id = "100000000000001"
default_team = "sales"

[[teams]]
id = "support"

[[agents]]
id = "sales-lead"
role = "manager"
token = "sales-lead-token-xyz"
manages = ["sales"]

[[agents]]
id = "support-lead"
role = "manager"
token = "support-lead-token-xyz"
manages = ["support"]
"#;

async fn start(clock: Arc<ManualClock>) -> anyhow::Result<Harness> {
    let options = StartOptions { clock, ..StartOptions::default() };
    Harness::start_on_with(options, "copilot reports test", &format!("{FLOW}{MORE}")).await
}

/// Waits until the conversation of `customer` has `status`.
async fn status_of(harness: &Harness, customer: &str, status: &str) -> TestResult {
    eventually(|| async {
        let (_, list) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await.ok()?;
        list["conversations"]
            .as_array()?
            .iter()
            .any(|conversation| conversation["contact"]["wa_id"] == customer && conversation["status"] == status)
            .then_some(())
    })
    .await
}

async fn report(harness: &Harness, path: &str, token: &str) -> anyhow::Result<Value> {
    let (status, body) = harness.get(path, token).await?;
    anyhow::ensure!(status == 200, "{path}: {status} {body}");
    Ok(body)
}

fn row<'r>(report: &'r Value, source: &str) -> Option<&'r Value> {
    report["rows"].as_array()?.iter().find(|row| row["source"] == source)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copilots_leads_are_counted_by_source_and_qualify_in_attribution() -> TestResult {
    let clock = ManualClock::new(now_s() * 1000);
    let harness = start(clock.clone()).await?;
    let (qualifies, asks, organic) = ("919700000011", "919700000012", "919700000013");

    // The first lead answers the three questions: 20 + 15 + 10 s.
    ad_click(&harness, qualifies).await?;
    sends(&harness, qualifies, 1).await?;
    clock.advance_ms(20_000);
    tap(&harness, qualifies, "2", "cp:budget:high", "Over 20 lakh").await?;
    sends(&harness, qualifies, 2).await?;
    clock.advance_ms(15_000);
    say(&harness, qualifies, "3", "2 units").await?;
    sends(&harness, qualifies, 3).await?;
    clock.advance_ms(10_000);
    say(&harness, qualifies, "4", "Pune").await?;
    status_of(&harness, qualifies, "queued").await?;
    // The second asks for a person at once; the third is organic (no flow).
    ad_click(&harness, asks).await?;
    sends(&harness, asks, 1).await?;
    say(&harness, asks, "2", "talk to a human").await?;
    status_of(&harness, asks, "queued").await?;
    say(&harness, organic, "1", "hello").await?;
    status_of(&harness, organic, "queued").await?;

    let copilot = report(&harness, "/api/v1/reports/copilot", MANAGER_TOKEN).await?;
    let rows = copilot["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "the ad only; the organic lead was never the co-pilot's: {copilot}");
    assert_eq!(
        rows[0],
        json!({
            "source": "paid",
            "source_id": AD,
            "conversations": 2,
            "qualified": 1,
            "qualified_rate": 0.5,
            "time_to_qualification": {"count": 1, "p50_s": 45.0, "p90_s": 45.0, "mean_s": 45.0},
            "handoffs": {"qualified": 1, "asked_for_person": 1, "timeout": 0, "unanswered": 0, "completed": 0},
            "closed_unqualified": {"not_qualified": 0, "nurtured": 0},
        })
    );
    // Nobody was assigned yet: the co-pilot's mark alone qualified the first lead.
    let attribution = report(&harness, "/api/v1/reports/attribution", MANAGER_TOKEN).await?;
    let ad = row(&attribution, "paid").cloned().unwrap_or_default();
    assert_eq!((&ad["conversations"], &ad["qualified"]), (&json!(2), &json!(1)), "{attribution}");
    let unpaid = row(&attribution, "organic").cloned().unwrap_or_default();
    assert_eq!((&unpaid["conversations"], &unpaid["qualified"]), (&json!(1), &json!(0)), "{attribution}");

    // By day, as CSV, and for managers limited to teams.
    let by_day = report(&harness, "/api/v1/reports/copilot?group_by=day", MANAGER_TOKEN).await?;
    assert_eq!(by_day["group_by"], "day");
    let today: String = protocol::time::format_rfc3339(clock.now_ms_for_test()).chars().take(10).collect();
    assert_eq!(by_day["rows"][0]["day"], today.as_str(), "{by_day}");
    assert_eq!(by_day["rows"][0]["qualified"], 1);
    let csv = harness
        .http
        .get(format!("{}/api/v1/reports/copilot?format=csv", harness.base_url()))
        .bearer_auth(MANAGER_TOKEN)
        .send()
        .await?;
    assert_eq!(csv.status().as_u16(), 200);
    let csv = csv.text().await?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let values: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let column = |name: &str| header.iter().position(|column| *column == name).map(|at| values[at]);
    assert_eq!(header[0], "source", "{csv}");
    assert_eq!(
        (column("qualified_rate"), column("time_to_qualification.p50_s"), column("handoffs.asked_for_person")),
        (Some("0.5"), Some("45.0"), Some("1")),
        "{csv}"
    );
    let sales = report(&harness, "/api/v1/reports/copilot", SALES_LEAD).await?;
    assert_eq!(sales["rows"], copilot["rows"], "the leads went to sales");
    let support = report(&harness, "/api/v1/reports/copilot", SUPPORT_LEAD).await?;
    assert_eq!(support["rows"], json!([]), "nothing went to support");
    let (status, refused) = harness.get("/api/v1/reports/copilot?group_by=agent", MANAGER_TOKEN).await?;
    assert_eq!((status, &refused["code"]), (400, &json!("bad_request")), "{refused}");
    let (status, _) = harness.get("/api/v1/reports/copilot", "a1-token-xyz").await?;
    assert_eq!(status, 403, "agents do not read reports");

    // An agent takes the queue: the qualified lead still counts once, the
    // one who asked for a person now too, and the organic one.
    let _a1 = harness.online_agent("a1").await?;
    for customer in [qualifies, asks, organic] {
        status_of(&harness, customer, "assigned").await?;
    }
    let attribution = report(&harness, "/api/v1/reports/attribution", MANAGER_TOKEN).await?;
    let (ad, unpaid) = (row(&attribution, "paid").cloned(), row(&attribution, "organic").cloned());
    assert_eq!(
        (ad.map(|ad| ad["qualified"].clone()), unpaid.map(|unpaid| unpaid["qualified"].clone())),
        (Some(json!(2)), Some(json!(1))),
        "{attribution}"
    );
    assert_eq!(row(&attribution, "paid").unwrap()["conversations"], 2, "{attribution}");
    let after = report(&harness, "/api/v1/reports/copilot", MANAGER_TOKEN).await?;
    assert_eq!(after["rows"], copilot["rows"], "an assignment is not the co-pilot's");
    harness.shutdown().await;
    Ok(())
}
