//! Every refusal is the contract's JSON `{code, message}` with a §4 status,
//! framework-level ones too (an unknown method, a body past the limit, a
//! query parameter that does not parse), and authentication comes before
//! parameters. See docs/API.md "Errors".

mod raw;

use serde_json::{Value, json};
use switchboard_tests::*;

type TestResult = anyhow::Result<()>;

/// Asserts a contract error: the status and `{code, message}` with a message.
fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str) {
    assert_eq!(status, expected_status, "status of {body}");
    assert_eq!(body["code"], expected_code, "code of {body}");
    assert!(body["message"].as_str().is_some_and(|message| !message.is_empty()), "a message in {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_method_is_json_not_found() -> TestResult {
    let harness = Harness::start().await?;
    for (method, path) in [
        (reqwest::Method::PUT, "/webhooks/whatsapp"),
        (reqwest::Method::DELETE, "/api/v1/conversations"),
        (reqwest::Method::POST, "/healthz"),
    ] {
        let response = harness
            .http
            .request(method.clone(), format!("{}{path}", harness.base_url()))
            .bearer_auth(MANAGER_TOKEN)
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_error(status, &body, 404, "not_found");
        assert!(body["detail"]["allow"].is_array(), "{method} {path}: the allowed methods in {body}");
    }
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_query_parameter_is_json_and_authentication_comes_first() -> TestResult {
    let harness = Harness::start().await?;
    let url = format!("{}/api/v1/conversations?limit=abc", harness.base_url());
    let anonymous = harness.http.get(&url).send().await?;
    let status = anonymous.status().as_u16();
    assert_error(status, &anonymous.json().await.unwrap_or(Value::Null), 401, "unauthorized");

    let (status, body) = harness.get("/api/v1/conversations?limit=abc", MANAGER_TOKEN).await?;
    assert_error(status, &body, 400, "bad_request");
    assert!(body["message"].as_str().unwrap().contains("limit"), "names the parameter: {body}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_resume_from_is_json_and_authentication_comes_first() -> TestResult {
    let harness = Harness::start().await?;
    let url = format!("{}/ws?resume_from=abc", harness.base_url());
    let anonymous = harness.http.get(&url).send().await?;
    let status = anonymous.status().as_u16();
    assert_error(status, &anonymous.json().await.unwrap_or(Value::Null), 401, "unauthorized");

    let (status, body) = harness.get("/ws?resume_from=abc", &agent_token("a1")).await?;
    assert_error(status, &body, 400, "bad_request");
    assert!(body["message"].as_str().unwrap().contains("resume_from"), "names the parameter: {body}");

    // A good upgrade still works; a plain GET is not an upgrade.
    let client = WsClient::connect(&harness.base_url(), &agent_token("a1"), Protocol::Json, Some(0)).await?;
    client.close().await;
    let (status, body) = harness.get("/ws", &agent_token("a1")).await?;
    assert_error(status, &body, 400, "bad_request");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_past_the_limit_is_json_bad_request_before_it_is_read() -> TestResult {
    let harness = Harness::start().await?;
    let addr = harness.server().addr;
    // Only the head is sent: the refusal must come from Content-Length alone.
    let nine_mib = 9 << 20;
    let head = format!(
        "POST /webhooks/whatsapp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         x-hub-signature-256: sha256=00\r\ncontent-length: {nine_mib}\r\n\r\n"
    );
    let mut stream = raw::send(addr, &head, b"").await?;
    let (status, body) = raw::read_response(&mut stream).await?;
    assert_error(status, &body, 400, "bad_request");
    assert!(body["detail"]["limit_bytes"].is_number(), "names the limit: {body}");

    let head = format!(
        "POST /api/v1/conversations/cv1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         authorization: Bearer {MANAGER_TOKEN}\r\ncontent-length: {}\r\n\r\n",
        3 << 20
    );
    let mut stream = raw::send(addr, &head, b"").await?;
    let (status, body) = raw::read_response(&mut stream).await?;
    assert_error(status, &body, 400, "bad_request");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_in_a_signed_webhook_are_refused() -> TestResult {
    let harness = Harness::start().await?;
    let first = inbound_text("919800000001", "wamid.dup.first", "first array");
    let second = inbound_text("919800000002", "wamid.dup.second", "second array");
    let value_of = |payload: &Value| payload["entry"][0]["changes"][0]["value"].clone();
    let messages = |payload: &Value| serde_json::to_string(&value_of(payload)["messages"]).unwrap();
    // `value` with two `messages` keys: a parser that keeps the last would
    // silently drop the first customer's message.
    let mut value = value_of(&first);
    value.as_object_mut().unwrap().remove("messages");
    let value_text = serde_json::to_string(&value)?;
    let duplicated = format!(
        "{},\"messages\":{},\"messages\":{}}}",
        value_text.strip_suffix('}').unwrap(),
        messages(&first),
        messages(&second)
    );
    let mut payload = first.clone();
    payload["entry"][0]["changes"][0]["value"] = json!("VALUE");
    let body = serde_json::to_string(&payload)?.replace("\"VALUE\"", &duplicated);
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "still JSON a lenient parser takes");

    let (status, answer) = post_signed(&harness.http, &harness.base_url(), APP_SECRET, body.as_bytes()).await?;
    assert_error(status, &answer, 400, "bad_request");
    assert!(answer["message"].as_str().unwrap().contains("messages"), "names the key: {answer}");
    let (_, listed) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    assert_eq!(listed["conversations"], json!([]), "nothing stored");
    harness.shutdown().await;
    Ok(())
}
