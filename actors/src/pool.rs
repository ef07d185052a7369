//! The agent pool changed at run time (PROTOCOL §7 `/api/v1/admin/agents`):
//! the [`System`] side. What a change may be and what it changes is
//! [`crate::roster`] (pure); here each change is committed — the stored
//! pool, its `configuration_changed` event and, for a deactivation, the
//! agent's status and its contacts' new owner with their events, in one
//! batch — and then applied: the pool and the routing table in force are
//! swapped, the agent's actor is spawned, updated or told it left, and
//! every team is given its members again. All under
//! `Shared::configuration_updates`, in a task of its own (a client gone
//! away mid-commit cannot leave a committed change unapplied).

use std::collections::HashMap;
use std::sync::Arc;

use protocol::ApiError;
use protocol::model::{AgentStatus, Role};
use ractor::ActorRef;
use storage::Op;

use crate::messages::{AgentMsg, Principal, TeamMsg};
use crate::roster::{self, AgentFields, AgentView, PoolAction, Roster};
use crate::settings::AgentSpec;
use crate::shared::Shared;
use crate::{AssignmentHistory, Child, Refusal, RootMsg, Spawned, System, routing, spawn_child};

/// What a pool change did: the agent as it is now and, for a
/// deactivation, how many conversations were routed again and contacts
/// handed over.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolOutcome {
    pub agent: AgentView,
    pub rerouted: usize,
    pub contacts: usize,
}

/// A change an admin asked for.
enum PoolChange {
    Add { fields: AgentFields, token_sha256: String },
    Change { id: String, fields: AgentFields },
    Rotate { id: String, token_sha256: String },
    Deactivate { id: String, successor: Option<String> },
}

/// The lowercase hex SHA-256 of a token, as the pool keeps it.
pub fn token_digest(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn only_admins(principal: &Principal) -> Result<(), ApiError> {
    if principal.role != Role::Admin {
        return Err(ApiError::forbidden("only admins change the agent pool"));
    }
    Ok(())
}

impl System {
    /// `GET /api/v1/admin/agents`: every agent, active ones first in pool
    /// order, then the deactivated ones.
    pub fn agent_views(&self) -> Vec<AgentView> {
        let mut views = self.shared.roster().views();
        for view in &mut views {
            view.copilot = self.copilot_of(&view.id);
        }
        views
    }

    /// Who presents `token` now (`None`: nobody: never issued, rotated
    /// away, or its agent deactivated).
    pub fn principal_of_token(&self, token: &str) -> Option<Principal> {
        self.shared.roster().principal_of_digest(&token_digest(token)).cloned()
    }

    /// Who presents a token with this digest now ([`token_digest`]).
    pub fn principal_of_digest(&self, digest: &str) -> Option<Principal> {
        self.shared.roster().principal_of_digest(digest).cloned()
    }

    /// The teams a manager is limited to (empty: every team).
    pub fn manages(&self, agent_id: &str) -> Vec<String> {
        self.shared.roster().get(agent_id).map(|spec| spec.manages.clone()).unwrap_or_default()
    }

    /// The teams a manager limited by `manages` sees and acts on; `None`:
    /// every team (admins, unlimited managers; an agent is limited to what
    /// it holds, which is checked apart).
    pub fn scope(&self, principal: &Principal) -> Option<Vec<String>> {
        if principal.role != Role::Manager {
            return None;
        }
        let manages = self.manages(&principal.agent_id);
        (!manages.is_empty()).then_some(manages)
    }

    /// `POST`: a new agent (or one deactivated before, back) with the token
    /// the caller generated (only its digest is kept).
    pub async fn add_agent(
        &self,
        principal: &Principal,
        fields: AgentFields,
        token: &str,
    ) -> Result<PoolOutcome, ApiError> {
        only_admins(principal)?;
        let change = PoolChange::Add { fields, token_sha256: token_digest(token) };
        self.change_pool(principal, change).await
    }

    /// `PATCH` of fields: in force for the next assignment; what it holds stays.
    pub async fn change_agent(
        &self,
        principal: &Principal,
        id: &str,
        fields: AgentFields,
    ) -> Result<PoolOutcome, ApiError> {
        only_admins(principal)?;
        self.change_pool(principal, PoolChange::Change { id: id.to_owned(), fields }).await
    }

    /// `PATCH {rotate_token: true}`: `token` (the caller generated it) is the
    /// agent's from now on; the old one stops at once and the sessions
    /// opened with it end.
    pub async fn rotate_token(&self, principal: &Principal, id: &str, token: &str) -> Result<PoolOutcome, ApiError> {
        only_admins(principal)?;
        let change = PoolChange::Rotate { id: id.to_owned(), token_sha256: token_digest(token) };
        self.change_pool(principal, change).await
    }

    /// `DELETE`: the agent leaves the pool. Its token stops at once, its
    /// sessions end, its open conversations are routed again
    /// (`agent_offline`), the contacts it owned pass to `successor` or lose
    /// their owner; its record and history stay.
    pub async fn deactivate_agent(
        &self,
        principal: &Principal,
        id: &str,
        successor: Option<String>,
    ) -> Result<PoolOutcome, ApiError> {
        only_admins(principal)?;
        self.change_pool(principal, PoolChange::Deactivate { id: id.to_owned(), successor }).await
    }

    async fn change_pool(&self, principal: &Principal, change: PoolChange) -> Result<PoolOutcome, ApiError> {
        let shared = self.shared.clone();
        let root = self.root.clone();
        let admin = principal.agent_id.clone();
        let applied = tokio::spawn(async move {
            let _serialized = shared.configuration_updates.lock().await;
            commit_and_apply(&shared, &root, &admin, change).await
        });
        let unstored = |problem: String| {
            tracing::warn!(%problem, "an agent pool change could not be stored");
            ApiError::unavailable("the agent pool cannot be changed right now; try again")
        };
        match applied.await.map_err(|error| unstored(error.to_string()))? {
            Ok(outcome) => Ok(outcome),
            Err(Refusal::Refused(refusal)) => Err(refusal),
            Err(Refusal::Unstored(problem)) => Err(unstored(problem)),
        }
    }
}

/// Under `configuration_updates`: decides, commits, then applies.
async fn commit_and_apply(
    shared: &Arc<Shared>,
    root: &ActorRef<RootMsg>,
    admin: &str,
    change: PoolChange,
) -> Result<PoolOutcome, Refusal> {
    let now = shared.now();
    let pool = shared.roster();
    let teams = &shared.settings.teams;
    let (after, action, before, changed, successor) = match change {
        PoolChange::Add { fields, token_sha256 } => {
            let (after, spec) = pool.add(fields, token_sha256, teams).map_err(Refusal::Refused)?;
            (after, PoolAction::Added, None, spec, None)
        }
        PoolChange::Change { id, fields } => {
            let (after, before, spec) = pool.change(&id, fields, teams).map_err(Refusal::Refused)?;
            (after, PoolAction::Changed, Some(before), spec, None)
        }
        PoolChange::Rotate { id, token_sha256 } => {
            let (after, spec) = pool.rotate(&id, token_sha256).map_err(Refusal::Refused)?;
            (after, PoolAction::TokenRotated, None, spec, None)
        }
        PoolChange::Deactivate { id, successor } => {
            let (after, spec) = pool.deactivate(&id, successor.as_deref(), admin, now).map_err(Refusal::Refused)?;
            (after, PoolAction::Deactivated, None, spec, successor)
        }
    };
    let table = routing_for(shared, &after)?;
    let id = changed.id.clone();
    // The event shows the record before a change or a deactivation, after anything but a deactivation.
    let (shown_before, shown_after) = match action {
        PoolAction::Deactivated => (Some(&changed), None),
        _ => (before.as_ref(), Some(&changed)),
    };
    let event = roster::pool_changed(action, shown_before, shown_after, successor.as_deref(), admin, now);
    let mut batch = vec![
        Op::PutSetting { name: roster::AGENTS.to_owned(), value: after.stored_form() },
        Op::Event(Box::new(event)),
    ];
    let unstored = |error: storage::StorageError| Refusal::Unstored(error.to_string());
    let mut contacts = 0;
    if action == PoolAction::Deactivated {
        batch.push(Op::PutAgentStatus { agent_id: id.clone(), status: AgentStatus::Offline });
        // Read and written under the contacts' lock, so no `PATCH` of one
        // of them falls between.
        let _contacts = shared.contact_updates.lock().await;
        let owned = shared.reader.caught_up().await.map_err(unstored)?.contacts_owned_by(&id).map_err(unstored)?;
        batch.extend(roster::hand_over(&owned, successor.as_deref(), admin, now));
        contacts = owned.len();
        shared.store.commit(batch).await.map_err(unstored)?;
    } else {
        shared.store.commit(batch).await.map_err(unstored)?;
    }
    tracing::info!(agent_id = %id, action = action.as_str(), contacts, successor = ?successor, %admin, "agent pool changed");
    let after = Arc::new(after);
    *shared.roster.write().unwrap_or_else(std::sync::PoisonError::into_inner) = after.clone();
    *shared.routing.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    let rerouted = apply_to_actors(shared, root, action, before.as_ref(), &changed).await;
    if action != PoolAction::TokenRotated {
        let directory = shared.directory();
        for team in &shared.settings.teams {
            if let Some(actor) = directory.team(&team.id) {
                let _ = actor.cast(TeamMsg::SetMembers(after.members_of(&team.id)));
                if action == PoolAction::Deactivated {
                    let _ = actor.cast(TeamMsg::ReleaseHolds { agent_id: id.clone() });
                }
            }
        }
    }
    Ok(PoolOutcome { agent: AgentView::of(&changed, after.deactivation(&id)), rerouted, contacts })
}

/// The routing table in force, rebuilt on the new pool (rules name agents,
/// agents' teams are where a rule's agent falls back to): a change the
/// rules in force cannot live with is refused, naming the rule.
fn routing_for(shared: &Shared, pool: &Roster) -> Result<routing::RoutingTable, Refusal> {
    let settings = &shared.settings;
    let spec = shared.routing().spec().clone();
    routing::RoutingTable::new(spec, &settings.teams, pool.agents(), &settings.numbers).map_err(|error| {
        Refusal::Refused(
            ApiError::bad_request(format!(
                "the routing rules in force would no longer hold ({error}); change them first \
                 (PUT /api/v1/admin/routing)"
            ))
            .with_detail(serde_json::json!({"place": error.place, "field": error.field})),
        )
    })
}

/// What the change means for the agent's actor; for a deactivation, how
/// many conversations it gave up.
async fn apply_to_actors(
    shared: &Arc<Shared>,
    root: &ActorRef<RootMsg>,
    action: PoolAction,
    before: Option<&AgentSpec>,
    spec: &AgentSpec,
) -> usize {
    let directory = shared.directory();
    match action {
        PoolAction::Added => match directory.agent(&spec.id) {
            // Back after a deactivation in this run: its actor is still there.
            Some(agent) => {
                let _ = agent.cast(AgentMsg::Update(Box::new(spec.clone())));
            }
            None => {
                let spawned = spawn_child(
                    root,
                    Child::Agent(spec.clone()),
                    shared,
                    &mut HashMap::new(),
                    &AssignmentHistory::default(),
                )
                .await;
                match spawned {
                    Ok(Spawned::Agent(agent)) => {
                        directory.agents.insert(spec.id.clone(), agent);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::error!(agent_id = %spec.id, %error, "cannot start the new agent's actor"),
                }
            }
        },
        PoolAction::Changed => {
            if let Some(agent) = directory.agent(&spec.id) {
                let _ = agent.cast(AgentMsg::Update(Box::new(spec.clone())));
                // A session holds the role it opened with: a new role takes
                // effect on the next session (REST requests read it each time).
                if before.is_some_and(|before| before.role != spec.role) {
                    let _ = agent.cast(AgentMsg::CloseSessions);
                }
            }
        }
        PoolAction::TokenRotated => {
            if let Some(agent) = directory.agent(&spec.id) {
                let _ = agent.cast(AgentMsg::CloseSessions);
            }
        }
        PoolAction::Deactivated => {
            if let Some(agent) = directory.agent(&spec.id) {
                return ractor::call!(agent, AgentMsg::Deactivate).unwrap_or(0);
            }
        }
    }
    0
}
