//! The team actor: one per configured team.
//!
//! Owns: the team's FIFO queue of waiting conversations, those held for one
//! agent for a while (a busy or offline owner's `owner_wait_s`: offered to
//! that agent when it announces room and on every housekeeping tick, then
//! queued for everyone when the hold runs out), its assignment strategy's
//! cursor, and a cached view of its members' free slots (pushed by the agent
//! actors). The cache only chooses whom to ask: the agent actor
//! grants or refuses the slot, so a stale view can cost a retry, never an
//! over-capacity assignment.
//! Restarted by: the system supervisor; its queue is rebuilt from the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::time::UnixMs;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::messages::{AgentMsg, ConversationMsg, ManagerMsg};
pub use crate::messages::{QueuedConversation, TeamMsg, TeamStats};
use crate::settings::{Strategy, TeamSpec};
use crate::shared::Shared;

pub struct TeamActor;

pub struct TeamArgs {
    pub spec: TeamSpec,
    /// Member agent ids, in configuration order.
    pub members: Vec<String>,
    pub shared: Arc<Shared>,
    /// The member this team gave a conversation to last (from the event
    /// log at start), so `round_robin` goes on after it, not from the top.
    pub last_agent: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberView {
    pub free: u32,
    pub load: u32,
    /// When it was last given a conversation by any team (0 = never).
    pub last_assigned_at: UnixMs,
    /// Status online and a session open (`switchboard_agents_online`).
    pub online: bool,
}

pub struct TeamState {
    spec: TeamSpec,
    shared: Arc<Shared>,
    members: Vec<String>,
    views: HashMap<String, MemberView>,
    cursor: usize,
    queue: WaitingQueue,
    /// Conversations held for one agent (each has a `hold`), few.
    held: Vec<QueuedConversation>,
    /// Conversations sent to a partner team (overflow) and not yet gone
    /// from the queue, with when: not offered or sent again meanwhile.
    overflowing: HashMap<String, UnixMs>,
}

/// A conversation sent to a partner whose move has not come back by then
/// (its actor failed) may be sent again.
const OVERFLOW_RETRY_MS: UnixMs = 10_000;
/// How long a team waits for a partner's free slots (two teams that
/// overflow into each other must not wait on each other for long).
const PARTNER_ANSWER_MS: u64 = 200;

/// The team's waiting conversations, oldest first: ordered by (queued_at,
/// arrival number), with an index by conversation id, so enqueue, remove and
/// taking the oldest are O(log n) even with a million waiting.
#[derive(Default)]
pub struct WaitingQueue {
    ordered: BTreeMap<(UnixMs, u64), QueuedConversation>,
    by_id: HashMap<String, (UnixMs, u64)>,
    arrivals: u64,
}

impl WaitingQueue {
    /// Adds a conversation unless it is already waiting.
    pub fn push(&mut self, queued: QueuedConversation) {
        if self.by_id.contains_key(&queued.conversation_id) {
            return;
        }
        self.arrivals += 1;
        let key = (queued.queued_at, self.arrivals);
        self.by_id.insert(queued.conversation_id.clone(), key);
        self.ordered.insert(key, queued);
    }

    pub fn remove(&mut self, conversation_id: &str) {
        if let Some(key) = self.by_id.remove(conversation_id) {
            self.ordered.remove(&key);
        }
    }

    pub fn front(&self) -> Option<&QueuedConversation> {
        self.ordered.values().next()
    }

    /// The oldest waiting conversation after `key` (from the front when
    /// `None`), with its key.
    pub fn next_after(&self, key: Option<(UnixMs, u64)>) -> Option<((UnixMs, u64), &QueuedConversation)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = key.map_or(Unbounded, Excluded);
        self.ordered.range((from, Unbounded)).next().map(|(key, queued)| (*key, queued))
    }

    pub fn contains(&self, conversation_id: &str) -> bool {
        self.by_id.contains_key(conversation_id)
    }

    pub fn pop_front(&mut self) -> Option<QueuedConversation> {
        let (_, queued) = self.ordered.pop_first()?;
        self.by_id.remove(&queued.conversation_id);
        Some(queued)
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    pub fn oldest_queued_at(&self) -> Option<UnixMs> {
        self.ordered.keys().next().map(|(queued_at, _)| *queued_at)
    }
}

impl Actor for TeamActor {
    type Msg = TeamMsg;
    type State = TeamState;
    type Arguments = TeamArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, args: TeamArgs) -> Result<Self::State, ActorProcessingErr> {
        // Round robin goes on after the member given the last conversation.
        let cursor = args
            .last_agent
            .and_then(|last| args.members.iter().position(|member| *member == last))
            .map_or(0, |index| index + 1);
        let state = TeamState {
            spec: args.spec,
            shared: args.shared,
            members: args.members,
            views: HashMap::new(),
            cursor,
            queue: WaitingQueue::default(),
            held: Vec::new(),
            overflowing: HashMap::new(),
        };
        // Nobody is known online until the members announce themselves
        // (they do again when a team actor is restarted).
        state.report_online();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // Oldest first even when a re-routed conversation arrives late.
            TeamMsg::Enqueue(queued) => state.wait(queued),
            TeamMsg::EnqueueMany(queued) => {
                for queued in queued {
                    state.wait(queued);
                }
            }
            TeamMsg::Availability { agent_id, free, load, last_assigned_at, online } => {
                let view = state.views.entry(agent_id.clone()).or_default();
                view.free = free;
                view.load = load;
                view.last_assigned_at = view.last_assigned_at.max(last_assigned_at);
                let online_changed = std::mem::replace(&mut view.online, online) != online;
                if online_changed {
                    state.report_online();
                }
                if free > 0 {
                    state.offer_held(Some(&agent_id)).await;
                }
            }
            TeamMsg::Remove { conversation_id } => {
                state.queue.remove(&conversation_id);
                state.overflowing.remove(&conversation_id);
                state.held.retain(|held| held.conversation_id != conversation_id);
            }
            TeamMsg::Tick => state.offer_held(None).await,
            TeamMsg::SetMembers(members) => {
                // Round robin goes on after the member it gave to last, if
                // still a member; views of those who left are forgotten.
                let last = state.cursor.checked_sub(1).and_then(|index| state.members.get(index)).cloned();
                state.views.retain(|agent, _| members.contains(agent));
                state.cursor =
                    last.and_then(|last| members.iter().position(|member| *member == last)).map_or(0, |at| at + 1);
                state.members = members;
                state.report_online();
            }
            TeamMsg::ReleaseHolds { agent_id } => {
                let (released, kept): (Vec<QueuedConversation>, Vec<QueuedConversation>) =
                    std::mem::take(&mut state.held)
                        .into_iter()
                        .partition(|held| held.hold.as_ref().is_some_and(|hold| hold.agent_id == agent_id));
                state.held = kept;
                for mut queued in released {
                    queued.hold = None;
                    state.queue.push(queued);
                }
            }
            TeamMsg::FreeSlots(reply) => {
                let _ = reply.send(state.free_slots());
                return Ok(());
            }
            TeamMsg::Stats(reply) => {
                let held_oldest = state.held.iter().map(|held| held.queued_at).min();
                let oldest_queued_at = match (state.queue.oldest_queued_at(), held_oldest) {
                    (Some(queued), Some(held)) => Some(queued.min(held)),
                    (queued, held) => queued.or(held),
                };
                let _ =
                    reply.send(TeamStats { queued: (state.queue.len() + state.held.len()) as u32, oldest_queued_at });
                return Ok(());
            }
        }
        state.drain().await;
        state.overflow().await;
        metrics::gauge!(crate::metrics::QUEUE_DEPTH, "team" => state.spec.id.clone()).set(state.queue.len() as f64);
        Ok(())
    }
}

impl TeamState {
    /// Sets `switchboard_agents_online{team}`: the members online, as they
    /// last announced it.
    fn report_online(&self) {
        let online =
            self.members.iter().filter(|member| self.views.get(*member).is_some_and(|view| view.online)).count();
        metrics::gauge!(crate::metrics::AGENTS_ONLINE, "team" => self.spec.id.clone()).set(online as f64);
    }

    /// Takes a conversation in: held for its agent, or queued for everyone.
    fn wait(&mut self, queued: QueuedConversation) {
        if queued.hold.is_some() {
            if !self.held.iter().any(|held| held.conversation_id == queued.conversation_id) {
                self.held.push(queued);
            }
        } else {
            self.queue.push(queued);
        }
    }

    /// Offers held conversations to their agent (only `agent`'s when given);
    /// those whose hold ran out join the queue, in their age order.
    async fn offer_held(&mut self, agent: Option<&str>) {
        let now = self.shared.now();
        let mut index = 0;
        while let Some(held) = self.held.get(index) {
            let Some(hold) = &held.hold else {
                let queued = self.held.swap_remove(index);
                self.queue.push(queued);
                continue;
            };
            if now >= hold.until {
                let mut queued = self.held.swap_remove(index);
                queued.hold = None;
                self.queue.push(queued);
                continue;
            }
            if agent.is_some_and(|agent| agent != hold.agent_id) {
                index += 1;
                continue;
            }
            if !self.shared.try_reserve(&hold.agent_id, &held.conversation_id).await {
                index += 1;
                continue;
            }
            let held = self.held.swap_remove(index);
            if let Some(hold) = held.hold {
                self.shared.assign(held.thread_key, held.conversation_id, hold.agent_id, hold.route);
            }
        }
    }

    /// Assigns queued conversations, oldest first, while some member has room.
    async fn drain(&mut self) {
        // Outside the team's hours its conversations wait (contract §7); the
        // housekeeping tick drains when the hours begin.
        if !self.is_open() {
            return;
        }
        // The queue's key of the last conversation nobody could take (its
        // excluded agent is the only one with room): those after it may go.
        let mut skipped_to = None;
        loop {
            let anyone = pick_member(self.spec.assignment, &self.members, &self.views, self.cursor, None);
            if anyone.is_none() {
                return; // nobody has room: the queue waits for an announcement
            }
            let Some((key, waiting)) = self.queue.next_after(skipped_to) else { return };
            if self.overflowing.contains_key(&waiting.conversation_id) {
                skipped_to = Some(key); // on its way to a partner team
                continue;
            }
            let waiting = waiting.clone();
            if self.offer(&waiting).await {
                self.queue.remove(&waiting.conversation_id);
            } else {
                skipped_to = Some(key);
            }
        }
    }

    fn is_open(&self) -> bool {
        self.spec.hours.is_none() || self.shared.policies.of(Some(&self.spec.id)).schedule.is_open(self.shared.now())
    }

    /// The conversations it could assign now, as its views of its members say.
    fn free_slots(&self) -> u32 {
        if !self.is_open() {
            return 0;
        }
        self.members.iter().filter_map(|member| self.views.get(member)).map(|view| view.free).sum()
    }

    /// Whether the waiting conversations (`waiting` of them, the oldest
    /// queued at `oldest`) pass the team's overflow bound.
    fn passes_bound(&self, waiting: usize, oldest: Option<UnixMs>) -> bool {
        let by_length = self.spec.overflow_queue.is_some_and(|bound| waiting >= bound as usize);
        let by_wait = match (self.spec.overflow_wait_s, oldest) {
            (Some(bound), Some(oldest)) => self.shared.now() - oldest >= bound as i64 * 1000,
            _ => false,
        };
        by_length || by_wait
    }

    /// Past its overflow bound, sends its oldest waiting conversations to
    /// the first partner teams with free slots (contract §7), as many as
    /// they have room for, while the bound is still passed. Each moves
    /// through its conversation actor (`Overflow`), which routes it there
    /// with route `overflow` and takes it out of this queue.
    async fn overflow(&mut self) {
        if self.spec.overflow_to.is_empty() || self.queue.is_empty() {
            return;
        }
        let now = self.shared.now();
        self.overflowing.retain(|_, sent| now - *sent < OVERFLOW_RETRY_MS);
        // The waiting ones not already on their way, walked oldest first
        // only as far as conversations move (the queue may be long).
        let on_their_way = self.overflowing.keys().filter(|id| self.queue.contains(id)).count();
        let mut remaining = self.queue.len() - on_their_way;
        let mut candidate = self.next_candidate(None);
        for partner in self.spec.overflow_to.clone() {
            if !self.passes_bound(remaining, candidate.as_ref().map(|(_, waiting)| waiting.queued_at)) {
                return;
            }
            let Some(actor) = self.shared.directory().team(&partner) else { continue };
            let free = ractor::call_t!(actor, TeamMsg::FreeSlots, PARTNER_ANSWER_MS).unwrap_or(0);
            for _ in 0..free {
                let Some((key, waiting)) = candidate.take() else { return };
                if !self.passes_bound(remaining, Some(waiting.queued_at)) {
                    return;
                }
                self.overflowing.insert(waiting.conversation_id.clone(), now);
                let _ = self.shared.directory().manager.cast(ManagerMsg::Deliver {
                    thread_key: waiting.thread_key,
                    message: ConversationMsg::Overflow {
                        conversation_id: waiting.conversation_id,
                        from_team: self.spec.id.clone(),
                        to_team: partner.clone(),
                    },
                });
                remaining -= 1;
                candidate = self.next_candidate(Some(key));
            }
        }
    }

    /// The oldest waiting conversation after `key` not already on its way to
    /// a partner team, with its queue key.
    fn next_candidate(&self, mut key: Option<(UnixMs, u64)>) -> Option<((UnixMs, u64), QueuedConversation)> {
        while let Some((at, waiting)) = self.queue.next_after(key) {
            if !self.overflowing.contains_key(&waiting.conversation_id) {
                return Some((at, waiting.clone()));
            }
            key = Some(at);
        }
        None
    }

    /// Offers a waiting conversation to the member the strategy picks, then
    /// the next while they refuse; true when one took it.
    async fn offer(&mut self, waiting: &QueuedConversation) -> bool {
        while let Some(index) =
            pick_member(self.spec.assignment, &self.members, &self.views, self.cursor, waiting.exclude_agent.as_deref())
        {
            let agent_id = self.members[index].clone();
            let Some(agent) = self.shared.agent(&agent_id) else {
                self.views.remove(&agent_id);
                continue;
            };
            let granted = ractor::call!(agent, |reply| AgentMsg::TryReserve {
                conversation_id: waiting.conversation_id.clone(),
                reply
            })
            .unwrap_or(false);
            let view = self.views.entry(agent_id.clone()).or_default();
            if !granted {
                view.free = 0; // stale view: the agent will announce again when it has room
                continue;
            }
            view.free = view.free.saturating_sub(1);
            view.load += 1;
            view.last_assigned_at = self.shared.now();
            self.cursor = index + 1;
            let (thread_key, conversation_id) = (waiting.thread_key.clone(), waiting.conversation_id.clone());
            self.shared.assign(thread_key, conversation_id, agent_id, waiting.route.clone());
            return true;
        }
        false
    }
}

/// The member to offer the next conversation to, among those believed to
/// have a free slot: `round_robin` takes the next in configuration order from
/// `cursor`; `least_loaded` the fewest open conversations, ties to the one
/// assigned least recently (by any team), then configuration order.
pub fn pick_member(
    strategy: Strategy,
    members: &[String],
    views: &HashMap<String, MemberView>,
    cursor: usize,
    exclude: Option<&str>,
) -> Option<usize> {
    if members.is_empty() {
        return None;
    }
    let has_room = |index: usize| {
        exclude != Some(members[index].as_str()) && views.get(&members[index]).is_some_and(|view| view.free > 0)
    };
    match strategy {
        Strategy::RoundRobin => {
            (0..members.len()).map(|offset| (cursor + offset) % members.len()).find(|&index| has_room(index))
        }
        Strategy::LeastLoaded => (0..members.len()).filter(|&index| has_room(index)).min_by_key(|&index| {
            let view = views[&members[index]];
            (view.load, view.last_assigned_at, index)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(entries: &[(&str, u32, u32, u64)]) -> HashMap<String, MemberView> {
        entries
            .iter()
            .map(|(id, free, load, last)| {
                (
                    id.to_string(),
                    MemberView { free: *free, load: *load, last_assigned_at: *last as UnixMs, online: true },
                )
            })
            .collect()
    }

    fn members() -> Vec<String> {
        ["a", "b", "c"].iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn round_robin_cycles_in_order_skipping_full_members() {
        let all_free = views(&[("a", 1, 0, 0), ("b", 1, 0, 0), ("c", 1, 0, 0)]);
        assert_eq!(pick_member(Strategy::RoundRobin, &members(), &all_free, 0, None), Some(0));
        assert_eq!(pick_member(Strategy::RoundRobin, &members(), &all_free, 1, None), Some(1));
        assert_eq!(pick_member(Strategy::RoundRobin, &members(), &all_free, 3, None), Some(0));
        let b_full = views(&[("a", 1, 0, 0), ("b", 0, 5, 0), ("c", 1, 0, 0)]);
        assert_eq!(pick_member(Strategy::RoundRobin, &members(), &b_full, 1, None), Some(2));
        assert_eq!(pick_member(Strategy::RoundRobin, &members(), &views(&[]), 0, None), None);
    }

    fn waiting(id: &str, queued_at: UnixMs) -> QueuedConversation {
        QueuedConversation {
            conversation_id: id.into(),
            thread_key: format!("t:{id}"),
            queued_at,
            exclude_agent: None,
            route: Default::default(),
            hold: None,
        }
    }

    #[test]
    fn the_queue_is_oldest_first_without_duplicates() {
        let mut queue = WaitingQueue::default();
        queue.push(waiting("b", 20));
        queue.push(waiting("a", 10));
        queue.push(waiting("c", 20));
        queue.push(waiting("a", 5)); // already waiting: ignored
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.oldest_queued_at(), Some(10));
        queue.remove("b");
        let order: Vec<String> = std::iter::from_fn(|| queue.pop_front()).map(|item| item.conversation_id).collect();
        assert_eq!(order, ["a", "c"], "oldest first, ties in arrival order");
        assert!(queue.is_empty());
        for (id, at) in [("x", 30), ("y", 10), ("z", 20)] {
            queue.push(waiting(id, at));
        }
        let (first_key, first) = queue.next_after(None).unwrap();
        assert_eq!(first.conversation_id, "y");
        let (second_key, second) = queue.next_after(Some(first_key)).unwrap();
        assert_eq!(second.conversation_id, "z", "the next oldest after a skipped one");
        let (third_key, _) = queue.next_after(Some(second_key)).unwrap();
        assert!(queue.next_after(Some(third_key)).is_none());
    }

    #[test]
    fn least_loaded_breaks_ties_by_least_recent_assignment() {
        let tied = views(&[("a", 1, 2, 9), ("b", 1, 2, 3), ("c", 1, 5, 0)]);
        assert_eq!(pick_member(Strategy::LeastLoaded, &members(), &tied, 0, None), Some(1));
        let lighter = views(&[("a", 1, 1, 9), ("b", 1, 2, 3), ("c", 0, 0, 0)]);
        assert_eq!(pick_member(Strategy::LeastLoaded, &members(), &lighter, 0, None), Some(0));
    }
}
