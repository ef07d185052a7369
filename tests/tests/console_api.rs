//! What the web console reads besides the contract's endpoints: the
//! disposition schema (`GET /api/v1/dispositions`, docs/API.md
//! "Dispositions") its close form is drawn from, and the pages themselves,
//! compiled in or (`server.console_dir`) read from a folder.

use reqwest::Method;
use serde_json::json;
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

const FORM: &str = r#"
[[teams]]
id = "sales"

[[teams]]
id = "collections"

[[agents]]
id = "a1"
token = "a1-token-xyz"
teams = ["sales"]

[[agents]]
id = "boss"
role = "manager"
token = "manager-token-1"

[[dispositions]]
key = "outcome"
label = "Outcome"
kind = "enum"
options = ["won", "lost"]
required_on_close = true
won_values = ["won"]

[[dispositions]]
key = "units"
kind = "number"
required_on_close = true

[[dispositions]]
key = "value"
label = "Deal value"
kind = "money"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disposition_schema_is_served_to_every_signed_in_client_per_team() -> TestResult {
    let harness = Harness::start_on("dispositions", FORM).await?;
    let fields = json!([
        {"key": "outcome", "label": "Outcome", "kind": "enum", "options": ["won", "lost"],
         "required_on_close": true, "won_values": ["won"]},
        {"key": "units", "label": "units", "kind": "number", "required_on_close": true},
        {"key": "value", "label": "Deal value", "kind": "money", "required_on_close": false},
    ]);
    // An agent reads it (it fills the form), for its team or for all.
    let (status, body) = harness.call(Method::GET, "/api/v1/dispositions?team=sales", "a1-token-xyz", None).await?;
    assert_eq!((status, &body), (200, &json!({"team": "sales", "fields": fields})));
    let (status, body) = harness.call(Method::GET, "/api/v1/dispositions", MANAGER_TOKEN, None).await?;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"fields": fields, "teams": {"sales": fields, "collections": fields}}));

    // Refusals say what to fix.
    let (status, body) = harness.call(Method::GET, "/api/v1/dispositions?team=legal", MANAGER_TOKEN, None).await?;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")), "{body}");
    assert!(body["message"].as_str().unwrap_or_default().contains("legal"), "{body}");
    let (status, body) = harness.call(Method::GET, "/api/v1/dispositions?colour=red", MANAGER_TOKEN, None).await?;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")), "{body}");
    let (status, body) = harness.call(Method::GET, "/api/v1/dispositions", "not-a-token", None).await?;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")), "{body}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_come_compiled_in_or_from_the_console_folder() -> TestResult {
    let harness = Harness::start().await?;
    let page = harness.http.get(format!("{}/agent", harness.base_url())).send().await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("Agent inbox"), "the compiled-in inbox");
    harness.shutdown().await;

    let folder = tempfile::tempdir()?;
    std::fs::write(folder.path().join("dashboard.html"), "<!doctype html><title>edited</title>")?;
    let dir = folder.path().to_owned();
    let harness = Harness::start_with(Default::default(), |config| config.server.console_dir = Some(dir)).await?;
    let page = harness.http.get(format!("{}/", harness.base_url())).send().await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await?, "<!doctype html><title>edited</title>", "read from the folder");
    // A page missing there is a clear error, not the compiled-in copy.
    let page = harness.http.get(format!("{}/agent", harness.base_url())).send().await?;
    assert_eq!(page.status(), 503);
    let body: serde_json::Value = page.json().await?;
    assert!(body["message"].as_str().unwrap_or_default().contains("console_dir"), "{body}");
    harness.shutdown().await;
    Ok(())
}
