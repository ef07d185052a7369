//! The access token goes to Meta and nowhere else: the Graph client follows
//! no redirect, and a phone number id from a webhook cannot steer the Graph
//! URL. `/metrics` takes `server.metrics_token` and nothing like it.

mod raw;

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type TestResult = anyhow::Result<()>;

/// A one-answer HTTP server on loopback: it records each request's head and
/// answers every request with `response(path)`.
struct CannedServer {
    base_url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl CannedServer {
    async fn start(response: impl Fn(&str) -> String + Send + Sync + 'static) -> anyhow::Result<CannedServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = heads.clone();
        let response = Arc::new(response);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let response = response.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    // The head, then as much body as Content-Length says.
                    let head_end = loop {
                        let Ok(read) = socket.read(&mut buffer).await else { return };
                        if read == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..read]);
                        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
                            break end + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
                    let length = raw::content_length(&head);
                    while request.len() < head_end + length {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => request.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    recorded.lock().unwrap().push(head);
                    let _ = socket.write_all(response(&path).as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(CannedServer { base_url, heads })
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_from_the_graph_api_is_an_upstream_error_and_the_token_goes_nowhere_else() -> TestResult {
    // Somewhere else: it would gladly "accept" the message.
    let foreign = CannedServer::start(|_| {
        let body = r#"{"messaging_product":"whatsapp","contacts":[{"input":"919700000001","wa_id":"919700000001"}],"messages":[{"id":"wamid.FOREIGN"}]}"#;
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    })
    .await?;
    // "Meta" redirects twice: once on its own host, then to the foreign one.
    let foreign_url = foreign.base_url.clone();
    let graph = CannedServer::start(move |path| {
        if path.starts_with("/hop") { redirect_to(&format!("{foreign_url}/collect")) } else { redirect_to("/hop") }
    })
    .await?;
    let graph_base_url = format!("{}/v23.0", graph.base_url);
    let harness =
        Harness::start_with(Default::default(), |config| config.whatsapp.graph_base_url = graph_base_url).await?;
    let mut agent = harness.online_agent("a1").await?;
    harness.post_webhook(&inbound_text("919700000001", "wamid.redirect.1", "hello")).await?;
    let conversation_id = agent.expect_type("assigned").await?["conversation"]["id"].clone();

    let answer = agent.request(json!({"type": "send", "conversation_id": conversation_id, "text": "hi!"})).await?;
    assert_eq!(answer["type"], "error", "a redirect is not Meta accepting the message: {answer}");
    assert_eq!(answer["code"], "upstream_error", "{answer}");
    let graph_heads = graph.heads();
    assert_eq!(graph_heads.len(), 1, "the redirect was not followed: {graph_heads:?}");
    assert!(graph_heads[0].starts_with("POST /v23.0/100000000000001/messages "), "{}", graph_heads[0]);
    assert!(foreign.heads().is_empty(), "nothing reached the foreign host: {:?}", foreign.heads());
    let (_, conversation) =
        harness.get(&format!("/api/v1/conversations/{}", conversation_id.as_str().unwrap()), MANAGER_TOKEN).await?;
    let outbound: Vec<&Value> =
        conversation["messages"].as_array().unwrap().iter().filter(|message| message["direction"] == "out").collect();
    assert!(outbound.iter().all(|message| message["id"] != "wamid.FOREIGN"), "{outbound:?}");
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_phone_number_id_is_not_metas_is_refused_and_nothing_is_sent() -> TestResult {
    let harness = Harness::start().await?;
    let _agent = harness.online_agent("a1").await?;
    for phone_number_id in ["../../admin/x?y=", "10000/../../x", "", "１２３"] {
        let body = engine::emulator::inbound_text_payload(
            phone_number_id,
            "919700000002",
            "Mallory",
            &format!("wamid.pnid.{}", phone_number_id.len()),
            "hello",
            now_s(),
            None,
        );
        let (status, answer) = harness.post_webhook(&body).await?;
        assert_eq!(status, 400, "{phone_number_id:?}: {answer}");
        assert_eq!(answer["code"], "bad_request", "{answer}");
        assert!(answer["message"].as_str().unwrap().contains("phone_number_id"), "{answer}");
    }
    let (_, list) = harness.get("/api/v1/conversations", MANAGER_TOKEN).await?;
    assert_eq!(list["conversations"], json!([]), "nothing was stored");
    // Meta's own id form still works, and the send goes to its path.
    harness.post_webhook(&inbound_text("919700000002", "wamid.pnid.ok", "hello")).await?;
    let (_, list) = eventually(|| async {
        let (status, body) = harness.get("/api/v1/conversations?status=assigned", MANAGER_TOKEN).await.ok()?;
        (body["conversations"].as_array()?.len() == 1).then_some((status, body))
    })
    .await?;
    let conversation_id = list["conversations"][0]["id"].as_str().unwrap().to_owned();
    let (status, sent) = harness
        .post(&format!("/api/v1/conversations/{conversation_id}/messages"), &agent_token("a1"), &json!({"text": "hi"}))
        .await?;
    assert_eq!(status, 200, "{sent}");
    let request = harness.emulator.requests().pop().expect("the emulator got the send");
    assert_eq!(request.phone_number_id, PHONE_NUMBER_ID);
    harness.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_take_the_metrics_token_and_nothing_close_to_it() -> TestResult {
    let harness =
        Harness::start_with(Default::default(), |config| config.server.metrics_token = Some("prom-token-4711".into()))
            .await?;
    let scrape = |token: &'static str| {
        let request = harness.http.get(format!("{}/metrics", harness.base_url())).bearer_auth(token);
        async move { anyhow::Ok(request.send().await?.status().as_u16()) }
    };
    assert_eq!(scrape("prom-token-4711").await?, 200);
    for wrong in ["prom-token-471", "prom-token-47111", "PROM-TOKEN-4711", ""] {
        assert_eq!(scrape(wrong).await?, 401, "{wrong:?}");
    }
    harness.shutdown().await;
    Ok(())
}
