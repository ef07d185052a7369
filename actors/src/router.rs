//! The router actor: takes a routing decision (`crate::routing::route`,
//! made by the conversation's decision) to the actors that carry it out.
//!
//! Owns: nothing durable. When the decision names an agent first (the
//! contact's owner, the returning customer's last closer, a rule's
//! `to_agent`, a transfer's target) it asks that agent for a slot; granted,
//! the conversation is assigned. Otherwise it goes to its team's queue, held
//! for that agent for the decision's wait (`owner_wait_s`) when there is one.
//! Restarted by: the system supervisor (it has no state to restore).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::{Hold, QueuedConversation, TeamMsg};
pub use crate::messages::{RouteRequest, RouterMsg};
use crate::shared::Shared;

pub struct RouterActor;

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        shared: Arc<Shared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let RouterMsg::Route(request) = message;
        let RouteRequest { conversation_id, thread_key, queued_at, routing } = request;
        let directory = shared.directory();
        let mut hold = None;
        if let Some(choice) = routing.agent.filter(|choice| routing.exclude_agent.as_ref() != Some(&choice.agent_id)) {
            if shared.try_reserve(&choice.agent_id, &conversation_id).await {
                shared.assign(thread_key, conversation_id, choice.agent_id, choice.route);
                return Ok(());
            }
            if choice.wait_ms > 0 && directory.agent(&choice.agent_id).is_some() {
                let until = shared.now().saturating_add(choice.wait_ms);
                hold = Some(Hold { agent_id: choice.agent_id, until, route: choice.route });
            }
        }
        match routing.team.as_deref().and_then(|team| directory.team(team)) {
            Some(team) => {
                let _ = team.cast(TeamMsg::Enqueue(QueuedConversation {
                    conversation_id,
                    thread_key,
                    queued_at,
                    exclude_agent: routing.exclude_agent,
                    route: routing.route,
                    hold,
                }));
            }
            None => {
                tracing::warn!(%conversation_id, team = ?routing.team, "no team to route to; the conversation stays queued");
            }
        }
        Ok(())
    }
}
