//! The directory of long-lived actors (the manager, the router, each agent
//! and team), by id. It names only message types, so every actor reaches
//! the others through it without importing their modules.

use std::sync::RwLock;

use dashmap::DashMap;
use ractor::ActorRef;

use crate::messages::{AgentMsg, ManagerMsg, RouterMsg, TeamMsg};

/// The long-lived actors, by id. Entries are replaced when the root
/// supervisor restarts an actor, so callers look them up each time.
pub struct Directory {
    pub manager: ActorRef<ManagerMsg>,
    pub(crate) router: RwLock<ActorRef<RouterMsg>>,
    pub(crate) agents: DashMap<String, ActorRef<AgentMsg>>,
    pub(crate) teams: DashMap<String, ActorRef<TeamMsg>>,
}

impl Directory {
    pub fn router(&self) -> ActorRef<RouterMsg> {
        self.router.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn agent(&self, agent_id: &str) -> Option<ActorRef<AgentMsg>> {
        self.agents.get(agent_id).map(|entry| entry.value().clone())
    }

    pub fn team(&self, team_id: &str) -> Option<ActorRef<TeamMsg>> {
        self.teams.get(team_id).map(|entry| entry.value().clone())
    }
}
