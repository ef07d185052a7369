//! `switchboard demo` as a newcomer runs it (README's quick start): the
//! binary starts on a new data directory, plays its past days first, and a
//! manager opening the console finds all three reports filled (SLA, funnel,
//! attribution with the ads' cost per closed deal) and the workload moving,
//! through the API and in a real browser (`tests/browser/demo.mjs`); live ad
//! leads are qualified by the sales team's co-pilot first and reach agents
//! with its summary.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

struct Demo {
    child: std::process::Child,
    base_url: String,
    token: String,
    /// The `curl` line the demo prints for its Conversions API events:
    /// (the emulator's access token, the list's URL).
    conversions: (String, String),
    http: reqwest::Client,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    fn start(data_dir: &std::path::Path) -> Result<Demo> {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard-under-test"))
            .args(["demo", "--listen", "127.0.0.1:0", "--rate", "5", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut said = Vec::new();
        let dashboard = loop {
            let line = lines.next().ok_or_else(|| anyhow!("the demo exited: {said:?}"))??;
            if let Some(url) = line.trim().strip_prefix("Manager dashboard:") {
                break url.trim().to_owned();
            }
            said.push(line);
        };
        let conversions = loop {
            let line = lines.next().ok_or_else(|| anyhow!("the demo exited: {said:?}"))??;
            if let Some(rest) = line.trim().strip_prefix("curl -H 'Authorization: Bearer ") {
                let (token, url) = rest.split_once("' ").ok_or_else(|| anyhow!("no URL in {line}"))?;
                break (token.to_owned(), url.trim().to_owned());
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let (base_url, token) = dashboard.split_once("/?token=").ok_or_else(|| anyhow!("no token in {dashboard}"))?;
        assert!(said.iter().any(|line| line.contains("past conversations")), "the past was played: {said:?}");
        Ok(Demo {
            child,
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            conversions,
            http: reqwest::Client::new(),
        })
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let response = self.http.get(format!("{}{path}", self.base_url)).bearer_auth(&self.token).send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status} {body}");
        Ok(body)
    }
}

impl Demo {
    /// The audit log's entries since `from` (RFC 3339), every page.
    async fn audit(&self, from: &str) -> Result<Vec<Value>> {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let mut url = format!("{}/api/v1/audit?limit=10000&from={from}", self.base_url);
            if let Some(after) = &after {
                url.push_str(&format!("&after={after}"));
            }
            let response = self.http.get(&url).bearer_auth(&self.token).send().await?;
            anyhow::ensure!(response.status().is_success(), "GET {url}: {}", response.status());
            let next = response.headers().get("x-next-after").and_then(|value| value.to_str().ok()).map(str::to_owned);
            let text = response.text().await?;
            entries.extend(text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()));
            match next {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }
}

fn rows(report: &Value) -> Vec<Value> {
    report["rows"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_opens_on_filled_reports_and_a_moving_workload() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let live_from = protocol::time::format_rfc3339(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64,
    );
    let demo = Demo::start(&folder.path().join("demo"))?;

    // The past days: every team answered, breached and closed something.
    let sla = demo.get("/api/v1/reports/sla?group_by=team").await?;
    let teams = rows(&sla).iter().filter(|row| row["team"].is_string()).count();
    assert!(teams >= 3, "SLA rows for the demo's teams: {sla}");
    for row in rows(&sla) {
        assert!(row["frt"]["count"].as_u64() > Some(0), "first responses timed: {row}");
    }
    let by_day = demo.get("/api/v1/reports/funnel?group_by=team,day").await?;
    let mut days: Vec<String> = rows(&by_day).iter().filter_map(|row| row["day"].as_str().map(str::to_owned)).collect();
    days.sort();
    days.dedup();
    assert!(days.len() >= 3, "three past days at least: {days:?}");
    let funnel = demo.get("/api/v1/reports/funnel?group_by=agent").await?;
    let closed: u64 = rows(&funnel).iter().filter_map(|row| row["closed"].as_u64()).sum();
    assert!(closed > 0, "deals won: {funnel}");
    let attribution = demo.get("/api/v1/reports/attribution").await?;
    let ads: Vec<Value> = rows(&attribution).into_iter().filter(|row| row["source"] == "paid").collect();
    assert_eq!(ads.len(), 3, "the three ads: {attribution}");
    for ad in &ads {
        assert!(ad["campaign"].is_string() && ad["spend"].as_f64() > Some(0.0), "named, with spend: {ad}");
        let (spend, won) = (ad["spend"].as_f64().unwrap_or(0.0), ad["closed"].as_u64().unwrap_or(0));
        if won > 0 {
            let cost = ad["cost_per_closed"].as_f64().unwrap_or(0.0);
            assert!((cost - spend / won as f64).abs() < 0.01, "cost per closed deal: {ad}");
        }
    }
    assert!(rows(&attribution).iter().any(|row| row["source"] == "referral"), "{attribution}");

    // Live: the workload changes as the simulated customers write.
    let held = |workload: &Value| -> Vec<u64> {
        workload["agents"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|agent| agent["assigned"].as_u64().unwrap_or(0))
            .collect()
    };
    let first = held(&demo.get("/api/v1/workload").await?);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = held(&demo.get("/api/v1/workload").await?);
        if now != first {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the workload never changed: {now:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Live paid leads reach agents: the emulator gets their QualifiedLead
    // events (Meta's Conversions API), once each.
    let (access_token, url) = &demo.conversions;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed: Value = demo.http.get(url).bearer_auth(access_token).send().await?.json().await?;
        let events: Vec<Value> =
            listed["conversions"].as_array().into_iter().flatten().map(|c| c["event"].clone()).collect();
        let mut ids: Vec<&str> = events.iter().filter_map(|event| event["event_id"].as_str()).collect();
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "an event sent twice: {events:?}");
        for event in &events {
            assert_eq!(event["action_source"], "business_messaging", "{event}");
            if event["event_name"] == "Purchase" {
                assert_eq!(event["custom_data"]["currency"], "INR", "{event}");
            }
        }
        if events.iter().any(|event| event["event_name"] == "QualifiedLead") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Conversions API event: {listed}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Live ad leads talk to the co-pilot first (status `bot`); the simulated
    // leads answer its questions, and it hands them to the sales agents with
    // a summary (docs/copilot.md): an agent gets one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let entries = demo.audit(&live_from).await?;
        let started: Vec<&str> = entries
            .iter()
            .filter(|entry| entry["action"] == "copilot_started")
            .filter_map(|entry| entry["conversation_id"].as_str())
            .collect();
        let mut reached_an_agent = false;
        for handoff in entries.iter().filter(|entry| entry["action"] == "copilot_handoff") {
            let data = &handoff["data"];
            assert_eq!(handoff["actor"], "copilot", "{handoff}");
            let reason = data["reason"].as_str().unwrap_or_default();
            assert!(
                ["qualified", "asked_for_person", "timeout", "unanswered", "completed"].contains(&reason),
                "{handoff}"
            );
            let summary = data["summary"].as_str().unwrap_or_default();
            assert!(summary.starts_with("Paid lead from ad"), "a summary for the agent: {handoff}");
            if reason == "qualified" {
                assert!(data["fields"]["plan"].is_string() && summary.contains("Qualified"), "{handoff}");
            }
            let id = handoff["conversation_id"].as_str().unwrap_or_default();
            assert!(started.contains(&id), "the co-pilot started it first: {handoff}");
            let conversation = demo.get(&format!("/api/v1/conversations/{id}")).await?;
            assert_ne!(conversation["status"], "bot", "handed over: {conversation}");
            assert_eq!(conversation["team"], "sales", "{conversation}");
            let messages = conversation["messages"].as_array().cloned().unwrap_or_default();
            assert!(messages.iter().any(|message| message["author"] == "copilot"), "its questions: {conversation}");
            reached_an_agent |= conversation["agent"].is_string();
        }
        if reached_an_agent {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no co-pilot hand-over reached an agent: {entries:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium, Node.js and `npm ci --prefix tests/browser`; .ci/run installs them and runs it"]
async fn a_manager_opening_the_demo_console_sees_the_heatmap_move_and_every_report_filled() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let demo = Demo::start(&folder.path().join("demo"))?;
    let shots = switchboard_tests::screenshot_dir("demo");
    let printed =
        switchboard_tests::run_browser_script("demo.mjs", &[&demo.base_url, &demo.token, &shots.display().to_string()])
            .await?;
    for report in ["sla", "funnel", "attribution"] {
        assert!(printed.contains(&format!("step: the {report} panel shows")), "{printed}");
    }
    Ok(())
}
