//! The actor system on tokio's paused clock: SLA warnings, breaches and the
//! service window close fire on virtual time, in order, never early — 24 hours
//! pass in milliseconds of real time.

use std::sync::Arc;
use std::time::Duration;

use protocol::ApiError;
use protocol::graph::{SendMessageRequest, SendMessageResponse};
use protocol::model::{AgentStatus, Role};
use protocol::ws::{ServerFrame, SlaKind, SlaState};
use storage::{IngestMessage, Op, StoreOptions};
use switchboard_actors::System;
use switchboard_actors::agent::SessionHandle;
use switchboard_actors::clock::{Clock, TokioClock};
use switchboard_actors::settings::{AgentSpec, Settings, SlaSpec, Strategy, TeamSpec};
use switchboard_actors::shared::{BoxFuture, Outbound};
use tokio::sync::mpsc;

struct NoSends;

impl Outbound for NoSends {
    fn send(&self, _: String, _: SendMessageRequest) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        Box::pin(async { Err(ApiError::unavailable("no sends in this test")) })
    }
}

fn settings() -> Settings {
    Settings {
        teams: vec![TeamSpec {
            id: "sales".into(),
            name: None,
            assignment: Strategy::RoundRobin,
            ..Default::default()
        }],
        agents: vec![AgentSpec {
            id: "a1".into(),
            name: None,
            role: Role::Agent,
            token: Some("a1-token-xyz".into()),
            token_sha256: None,
            teams: vec!["sales".into()],
            capacity: Some(5),
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot: None,
        }],
        sla: SlaSpec { first_response_s: 600, next_response_s: 600, resolution_s: 86_400, reassign_after_s: 0 },
        ..Settings::default()
    }
}

async fn next_event(events: &mut mpsc::Receiver<Arc<ServerFrame>>) -> ServerFrame {
    // Virtual time: this wait may span hours of the engine's clock.
    tokio::time::timeout(Duration::from_secs(7 * 86_400), events.recv())
        .await
        .expect("an event before a week of virtual time")
        .expect("the session stays attached")
        .as_ref()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn sla_and_window_deadlines_fire_on_virtual_time_in_order_never_early() {
    let base = 1_795_514_400_000;
    let clock = TokioClock::starting_at(base);
    let dir = tempfile::tempdir().unwrap();
    let system =
        System::start(settings(), dir.path(), StoreOptions::default(), Arc::new(NoSends), clock.clone()).await.unwrap();
    let (sender, mut events) = mpsc::channel(64);
    system.attach("a1", SessionHandle { session_id: "s1".into(), sender }).await.unwrap();
    system.set_status("a1", AgentStatus::Online).await.unwrap();

    let message = serde_json::from_value(serde_json::json!({
        "id": "wamid.paused.1", "from": "919800000001", "timestamp": (base / 1000).to_string(),
        "type": "text", "text": {"body": "hello"}
    }))
    .unwrap();
    let ingest = IngestMessage {
        phone_number_id: "100000000000001".into(),
        contact_key: "919800000001".into(),
        contact: None,
        message: Box::new(message),
    };
    system.ingest(vec![Op::IngestMessage(ingest)]).await.unwrap();

    let ServerFrame::Assigned { conversation, .. } = next_event(&mut events).await else {
        panic!("the first event is the assignment");
    };
    let opened_at = conversation.opened_at;
    let service_until = conversation.service_until.expect("a customer message opens the service window");
    assert_eq!(service_until, base + 24 * 3_600_000);

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let frame = next_event(&mut events).await;
        let now = clock.now_ms();
        match frame {
            ServerFrame::Sla { kind: SlaKind::FirstResponse, state: SlaState::Warning, .. } => {
                assert!(now >= opened_at + 480_000, "warning at 80 %, never early: {now} vs {opened_at}");
                seen.push("frt warning");
            }
            ServerFrame::Sla { kind: SlaKind::FirstResponse, state: SlaState::Breached, .. } => {
                assert!(now >= opened_at + 600_000, "breach at 100 %, never early");
                seen.push("frt breached");
            }
            ServerFrame::Sla { kind: SlaKind::Resolution, state: SlaState::Warning, .. } => {
                assert!(now >= opened_at + 86_400_000 * 4 / 5);
                seen.push("trt warning");
            }
            ServerFrame::Window { service_until: Some(until), .. } => {
                assert_eq!(until, service_until);
                assert!(now >= service_until, "the window closes at 24:00:00, not before");
                seen.push("window closed");
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen, ["frt warning", "frt breached", "trt warning", "window closed"]);
    system.shutdown().await;
}
