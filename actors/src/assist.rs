//! The co-pilot's agent assist toggle (PROTOCOL §11, docs/copilot.md
//! "Agent assist"): who may turn an agent's assist on or off, and what is
//! in force. The agent actor owns the state (it shows it in the workload
//! frame) and commits each change with its `copilot_toggled` event; the
//! engine's suggestions consumer reads the stored choice
//! ([`System::copilot_of`]).

use protocol::ApiError;
use protocol::model::Role;

use crate::System;
use crate::messages::{AgentMsg, Principal};
use crate::settings::AgentSpec;

/// Whether an agent's assist is on: the stored choice when there is one,
/// else the configuration's `copilot` (off when unset).
pub fn copilot_in_force(stored: Option<bool>, spec: &AgentSpec) -> bool {
    stored.or(spec.copilot).unwrap_or(false)
}

/// Whether `principal` may set `target`'s assist: the agent itself; a
/// manager or admin, a manager limited to teams (`scope`) only for agents
/// of those teams. Everyone else is `forbidden`.
pub fn may_set_copilot(principal: &Principal, scope: Option<&[String]>, target: &AgentSpec) -> Result<(), ApiError> {
    if principal.agent_id == target.id {
        return Ok(());
    }
    if !principal.role.sees_everything() {
        return Err(ApiError::forbidden("an agent turns only its own co-pilot on or off"));
    }
    if let Some(teams) = scope
        && !target.teams.iter().any(|team| teams.contains(team))
    {
        return Err(ApiError::forbidden(format!("agent {} is not in a team you manage", target.id)));
    }
    Ok(())
}

impl System {
    /// Turns `agent_id`'s assist on or off for `principal` (WebSocket
    /// `set_copilot`, `PUT /api/v1/agents/{id}/copilot`); answers the state
    /// now, once stored and audited.
    pub async fn set_copilot(&self, principal: &Principal, agent_id: &str, enabled: bool) -> Result<bool, ApiError> {
        let target = self.shared.roster().get(agent_id).cloned();
        // An agent asking about another learns nothing of who exists.
        let Some(target) = target else {
            if principal.agent_id != agent_id && !principal.role.sees_everything() {
                return Err(ApiError::forbidden("an agent turns only its own co-pilot on or off"));
            }
            return Err(ApiError::not_found(format!("no active agent {agent_id}")));
        };
        let scope = self.scope(principal);
        may_set_copilot(principal, scope.as_deref(), &target)?;
        let agent = self.shared.agent(agent_id).ok_or_else(|| ApiError::not_found(format!("no agent {agent_id}")))?;
        let by = principal.agent_id.clone();
        ractor::call!(agent, |reply| AgentMsg::SetCopilot { enabled, by, reply })
            .map_err(|_| ApiError::unavailable("the agent is restarting; try again"))?
    }

    /// `GET /api/v1/agents/{id}/copilot`: who may set it may read it.
    pub fn copilot_for(&self, principal: &Principal, agent_id: &str) -> Result<bool, ApiError> {
        let target = self.shared.roster().get(agent_id).cloned();
        let Some(target) = target else {
            if principal.agent_id != agent_id && principal.role == Role::Agent {
                return Err(ApiError::forbidden("an agent sees only its own co-pilot setting"));
            }
            return Err(ApiError::not_found(format!("no active agent {agent_id}")));
        };
        may_set_copilot(principal, self.scope(principal).as_deref(), &target)?;
        Ok(self.copilot_of(agent_id))
    }

    /// Whether `agent_id`'s assist is on now, as stored (read through the
    /// store's overlay: a change is seen once it is acknowledged). An
    /// agent not in the pool, or a record that cannot be read, is off.
    pub fn copilot_of(&self, agent_id: &str) -> bool {
        let Some(spec) = self.shared.roster().get(agent_id).cloned() else { return false };
        let stored = match self.shared.reader.agent(agent_id) {
            Ok(record) => record.copilot,
            Err(error) => {
                tracing::warn!(%agent_id, %error, "cannot read the agent's co-pilot setting; taken as off");
                return false;
            }
        };
        copilot_in_force(stored, &spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, teams: &[&str], copilot: Option<bool>) -> AgentSpec {
        AgentSpec {
            id: id.into(),
            name: None,
            role: Role::Agent,
            token: None,
            token_sha256: None,
            teams: teams.iter().map(|team| (*team).to_owned()).collect(),
            capacity: None,
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot,
        }
    }

    fn principal(id: &str, role: Role) -> Principal {
        Principal { agent_id: id.into(), role }
    }

    #[test]
    fn the_stored_choice_wins_over_the_configuration() {
        assert!(!copilot_in_force(None, &spec("a", &[], None)), "off unless configured");
        assert!(copilot_in_force(None, &spec("a", &[], Some(true))));
        assert!(!copilot_in_force(Some(false), &spec("a", &[], Some(true))));
        assert!(copilot_in_force(Some(true), &spec("a", &[], None)));
    }

    #[test]
    fn agents_set_their_own_managers_those_in_scope() {
        let asha = spec("asha", &["sales"], None);
        assert!(may_set_copilot(&principal("asha", Role::Agent), None, &asha).is_ok());
        let other = may_set_copilot(&principal("ravi", Role::Agent), None, &asha).unwrap_err();
        assert_eq!(other.code, protocol::ErrorCode::Forbidden);
        assert!(may_set_copilot(&principal("boss", Role::Manager), None, &asha).is_ok());
        assert!(may_set_copilot(&principal("root", Role::Admin), None, &asha).is_ok());
        let sales = vec!["sales".to_owned()];
        let support = vec!["support".to_owned()];
        assert!(may_set_copilot(&principal("lead", Role::Manager), Some(&sales), &asha).is_ok());
        let outside = may_set_copilot(&principal("lead", Role::Manager), Some(&support), &asha).unwrap_err();
        assert_eq!(outside.code, protocol::ErrorCode::Forbidden);
    }
}
