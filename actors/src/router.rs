//! The router actor: decides where a conversation that needs an agent goes.
//!
//! Owns: nothing durable. Today's rules: a returning customer goes first to
//! the agent who closed their latest conversation, when that agent can take
//! it; otherwise to the conversation's team queue.
//! Restarted by: the system supervisor (it has no state to restore).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::{AgentMsg, ConversationMsg, ManagerMsg, QueuedConversation, TeamMsg};
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
        let directory = shared.directory();
        if let Some((agent_id, actor)) = request
            .preferred_agent
            .as_deref()
            .filter(|agent| request.exclude_agent.as_deref() != Some(*agent))
            .and_then(|agent| directory.agent(agent).map(|actor| (agent, actor)))
        {
            let granted = ractor::call!(actor, |reply| AgentMsg::TryReserve {
                conversation_id: request.conversation_id.clone(),
                reply
            })
            .unwrap_or(false);
            if granted {
                let _ = directory.manager.cast(ManagerMsg::Deliver {
                    thread_key: request.thread_key,
                    message: ConversationMsg::Assign {
                        conversation_id: request.conversation_id,
                        agent_id: agent_id.to_owned(),
                    },
                });
                return Ok(());
            }
        }
        match request.team.as_deref().and_then(|team| directory.team(team)) {
            Some(team) => {
                let _ = team.cast(TeamMsg::Enqueue(QueuedConversation {
                    conversation_id: request.conversation_id,
                    thread_key: request.thread_key,
                    queued_at: request.queued_at,
                    exclude_agent: request.exclude_agent,
                }));
            }
            None => {
                tracing::warn!(conversation_id = %request.conversation_id, team = ?request.team, "no team to route to; the conversation stays queued");
            }
        }
        Ok(())
    }
}
