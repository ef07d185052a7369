//! A change of the agent pool that the store cannot write changes nothing:
//! the admin hears `unavailable`, the token still works, the agent keeps
//! its session and its conversations; once the disk takes writes again the
//! same change goes through, at once.

use std::sync::Arc;
use std::time::Duration;

use protocol::graph::{SendMessageRequest, SendMessageResponse};
use protocol::model::{AgentStatus, Role};
use protocol::{ApiError, ErrorCode};
use storage::{IoFaults, StoreOptions};
use switchboard_actors::System;
use switchboard_actors::agent::SessionHandle;
use switchboard_actors::clock::ManualClock;
use switchboard_actors::roster::parse_fields;
use switchboard_actors::settings::{AgentSpec, Settings, TeamSpec};
use switchboard_actors::shared::{BoxFuture, Outbound, Principal};
use tokio::sync::mpsc;

struct NoSends;

impl Outbound for NoSends {
    fn send(&self, _: String, _: SendMessageRequest) -> BoxFuture<Result<SendMessageResponse, ApiError>> {
        Box::pin(async { Err(ApiError::unavailable("no sends in this test")) })
    }
}

fn agent(id: &str, role: Role) -> AgentSpec {
    AgentSpec {
        id: id.into(),
        name: None,
        role,
        token: Some(format!("{id}-token-xyz")),
        token_sha256: None,
        teams: if role == Role::Agent { vec!["sales".into()] } else { Vec::new() },
        capacity: None,
        city: None,
        manages: Vec::new(),
        shift: None,
        copilot: None,
    }
}

fn settings() -> Settings {
    Settings {
        teams: vec![TeamSpec { id: "sales".into(), ..Default::default() }],
        agents: vec![agent("a1", Role::Agent), agent("a2", Role::Agent), agent("root", Role::Admin)],
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_change_the_store_refuses_changes_nothing_until_it_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let faults = IoFaults::new();
    let options = StoreOptions { faults: Some(faults.clone()), ..StoreOptions::default() };
    let clock = ManualClock::new(1_796_083_200_000);
    let system = System::start(settings(), dir.path(), options, Arc::new(NoSends), clock).await.unwrap();
    let (sender, mut events) = mpsc::channel(64);
    system.attach("a1", SessionHandle { session_id: "s1".into(), sender }).await.unwrap();
    system.set_status("a1", AgentStatus::Online).await.unwrap();
    let admin = Principal { agent_id: "root".into(), role: Role::Admin };
    let unavailable = |result: Result<_, ApiError>| result.expect_err("refused").code == ErrorCode::Unavailable;

    faults.fail_after(0);
    assert!(unavailable(system.deactivate_agent(&admin, "a1", None).await));
    assert!(unavailable(system.rotate_token(&admin, "a2", "a2-next-token").await));
    let meena = parse_fields(&serde_json::json!({"id": "meena", "teams": ["sales"]}), true).unwrap();
    assert!(unavailable(system.add_agent(&admin, meena.clone(), "meena-token").await));
    let moved = parse_fields(&serde_json::json!({"teams": []}), false).unwrap();
    assert!(unavailable(system.change_agent(&admin, "a2", moved).await));

    // Nothing changed: the same tokens, the same pool, the session still attached.
    assert!(system.principal_of_token("a1-token-xyz").is_some(), "a1's token still works");
    assert!(system.principal_of_token("a2-token-xyz").is_some(), "a2's old token still works");
    assert!(system.principal_of_token("a2-next-token").is_none());
    assert!(system.principal_of_token("meena-token").is_none());
    let views = system.agent_views();
    assert_eq!(views.iter().map(|view| view.id.as_str()).collect::<Vec<_>>(), ["a1", "a2", "root"]);
    assert!(views.iter().all(|view| view.active));
    assert_eq!(views[1].teams, ["sales"]);
    assert!(matches!(events.try_recv(), Err(mpsc::error::TryRecvError::Empty)), "a1's session is still open");

    // The disk takes writes again: the same change goes through.
    faults.heal();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        match system.deactivate_agent(&admin, "a1", None).await {
            Ok(outcome) => break outcome,
            Err(error) if error.code == ErrorCode::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the store did not come back: {error:?}"),
        }
    };
    assert!(!outcome.agent.active);
    assert!(system.principal_of_token("a1-token-xyz").is_none(), "the token stops once the change is stored");
    let closed = tokio::time::timeout(Duration::from_secs(5), async { while events.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "a1's session is ended");
    system.shutdown().await;
}
