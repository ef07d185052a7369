//! The WebSocket agents.
//!
//! Each agent is one task holding one session (`/ws`, Bearer token, subprotocol
//! `switchboard.v1.json`, opened with `sim::agent::connect`). It goes online, records every customer message it
//! receives (in a `snapshot`, an `assigned` conversation or a `message` event)
//! in the ledger, replies after a think time, and closes a conversation with
//! disposition fields once the customer's session is over (or the customer has
//! been quiet for `idle_close`). Replies and closes are scheduled on a per-agent
//! timer heap woken by one sleep, so the read loop never blocks.
//!
//! When its session drops it reconnects with `resume_from` the last event seq
//! it saw, and skips replayed events it already had.
//!
//! What it checks:
//! - double assignment: one registry of who holds each conversation, fed by
//!   `assigned`/`snapshot` and `unassigned`. A conversation assigned to an agent
//!   while another still holds it is suspect; it counts once the previous holder
//!   has not been told `unassigned` within `DOUBLE_ASSIGNMENT_GRACE` (the two
//!   sessions are separate sockets, so the two events may cross).
//! - capacity: an agent holding more open conversations than its capacity.
//! - order: per conversation, a customer message delivered after a later one of
//!   the same customer although it had been acknowledged before that later one
//!   was even scheduled (messages in flight together may land in either order).

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sim::agent::{Message as WsMessage, Protocol, Socket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ledger::{DeliveryKind, DeliveryOutcome, Ledger, PhaseLedger};
use crate::workload::MessageTag;

/// How long two agents may both appear to hold a conversation before it counts
/// as a double assignment.
pub const DOUBLE_ASSIGNMENT_GRACE: Duration = Duration::from_secs(2);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_CLOSE_ATTEMPTS: u32 = 3;
/// Outcomes in every configuration the harness writes (and the default one).
const OUTCOMES: &[&str] = &["closed_won", "follow_up", "not_qualified", "demo_booked"];

#[derive(Clone, Debug)]
pub struct FleetSettings {
    pub base_url: String,
    pub token_prefix: String,
    pub agents: usize,
    /// Known capacity per agent: enables the capacity check.
    pub capacity: Option<u32>,
    pub think_time: Duration,
    pub idle_close: Duration,
    /// At most this many WebSocket handshakes at once (`None`: no limit), so
    /// thousands of agents connect gradually.
    pub connect_concurrency: Option<usize>,
}

/// What the agents saw. Plain counters; `snapshot` copies them for deltas.
pub struct FleetCounters {
    pub frames: AtomicU64,
    pub assignments: Vec<AtomicU64>,
    pub double_assigned: AtomicU64,
    pub capacity_exceeded: AtomicU64,
    pub seq_gaps: AtomicU64,
    pub reconnects: AtomicU64,
    pub replies_ok: AtomicU64,
    pub closes_ok: AtomicU64,
    /// Customer messages whose wamid is not this run's.
    pub foreign_messages: AtomicU64,
    /// `message` events for a conversation the agent does not hold.
    pub messages_for_unheld: AtomicU64,
    pub undecodable_frames: AtomicU64,
    errors_by_code: std::sync::Mutex<BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetSnapshot {
    pub frames: u64,
    pub assignments: Vec<u64>,
    pub double_assigned: u64,
    pub capacity_exceeded: u64,
    pub seq_gaps: u64,
    pub reconnects: u64,
    pub replies_ok: u64,
    pub closes_ok: u64,
    pub foreign_messages: u64,
    pub messages_for_unheld: u64,
    pub undecodable_frames: u64,
    pub errors_by_code: BTreeMap<String, u64>,
}

impl FleetSnapshot {
    /// `self - earlier`, counter by counter.
    pub fn since(&self, earlier: &FleetSnapshot) -> FleetSnapshot {
        let assignments = self
            .assignments
            .iter()
            .enumerate()
            .map(|(index, now)| now - earlier.assignments.get(index).copied().unwrap_or(0))
            .collect();
        let errors_by_code = self
            .errors_by_code
            .iter()
            .map(|(code, now)| (code.clone(), now - earlier.errors_by_code.get(code).copied().unwrap_or(0)))
            .filter(|(_, count)| *count > 0)
            .collect();
        FleetSnapshot {
            frames: self.frames - earlier.frames,
            assignments,
            double_assigned: self.double_assigned - earlier.double_assigned,
            capacity_exceeded: self.capacity_exceeded - earlier.capacity_exceeded,
            seq_gaps: self.seq_gaps - earlier.seq_gaps,
            reconnects: self.reconnects - earlier.reconnects,
            replies_ok: self.replies_ok - earlier.replies_ok,
            closes_ok: self.closes_ok - earlier.closes_ok,
            foreign_messages: self.foreign_messages - earlier.foreign_messages,
            messages_for_unheld: self.messages_for_unheld - earlier.messages_for_unheld,
            undecodable_frames: self.undecodable_frames - earlier.undecodable_frames,
            errors_by_code,
        }
    }

    pub fn total_assignments(&self) -> u64 {
        self.assignments.iter().sum()
    }
}

impl FleetCounters {
    fn new(agents: usize) -> FleetCounters {
        FleetCounters {
            frames: AtomicU64::new(0),
            assignments: (0..agents).map(|_| AtomicU64::new(0)).collect(),
            double_assigned: AtomicU64::new(0),
            capacity_exceeded: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            replies_ok: AtomicU64::new(0),
            closes_ok: AtomicU64::new(0),
            foreign_messages: AtomicU64::new(0),
            messages_for_unheld: AtomicU64::new(0),
            undecodable_frames: AtomicU64::new(0),
            errors_by_code: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn count_error(&self, code: &str) {
        let mut errors = self.errors_by_code.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *errors.entry(code.to_owned()).or_default() += 1;
    }

    pub fn snapshot(&self) -> FleetSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FleetSnapshot {
            frames: load(&self.frames),
            assignments: self.assignments.iter().map(load).collect(),
            double_assigned: load(&self.double_assigned),
            capacity_exceeded: load(&self.capacity_exceeded),
            seq_gaps: load(&self.seq_gaps),
            reconnects: load(&self.reconnects),
            replies_ok: load(&self.replies_ok),
            closes_ok: load(&self.closes_ok),
            foreign_messages: load(&self.foreign_messages),
            messages_for_unheld: load(&self.messages_for_unheld),
            undecodable_frames: load(&self.undecodable_frames),
            errors_by_code: self.errors_by_code.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        }
    }
}

struct Suspicion {
    previous_holder: usize,
    since: Instant,
}

/// Who holds each open conversation, across all agents.
#[derive(Default)]
struct HolderRegistry {
    holders: DashMap<String, usize>,
    suspicions: DashMap<String, Suspicion>,
}

impl HolderRegistry {
    fn assigned(&self, conversation_id: &str, agent: usize) {
        let previous = self.holders.insert(conversation_id.to_owned(), agent);
        if let Some(previous_holder) = previous
            && previous_holder != agent
        {
            self.suspicions.insert(conversation_id.to_owned(), Suspicion { previous_holder, since: Instant::now() });
        }
    }

    fn released(&self, conversation_id: &str, agent: usize) {
        self.holders.remove_if(conversation_id, |_, holder| *holder == agent);
        self.suspicions.remove_if(conversation_id, |_, suspicion| suspicion.previous_holder == agent);
    }

    /// Counts suspicions older than the grace as double assignments.
    fn settle(&self, counters: &FleetCounters, grace: Duration) {
        self.suspicions.retain(|_, suspicion| {
            if suspicion.since.elapsed() < grace {
                return true;
            }
            counters.double_assigned.fetch_add(1, Ordering::Relaxed);
            false
        });
    }
}

struct FleetShared {
    settings: FleetSettings,
    ledger: Arc<Ledger>,
    counters: FleetCounters,
    holders: HolderRegistry,
    online: AtomicUsize,
    connected: AtomicUsize,
    connect_gate: Option<Arc<tokio::sync::Semaphore>>,
}

pub struct AgentFleet {
    shared: Arc<FleetShared>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl AgentFleet {
    /// Starts one task per agent (1..=settings.agents); each connects at once.
    pub fn start(settings: FleetSettings, ledger: Arc<Ledger>) -> AgentFleet {
        let settings_gate =
            settings.connect_concurrency.map(|permits| Arc::new(tokio::sync::Semaphore::new(permits.max(1))));
        let shared = Arc::new(FleetShared {
            counters: FleetCounters::new(settings.agents),
            settings,
            ledger,
            holders: HolderRegistry::default(),
            online: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            connect_gate: settings_gate,
        });
        let (stop, stopping) = watch::channel(false);
        let tasks = (1..=shared.settings.agents)
            .map(|index| tokio::spawn(agent_loop(shared.clone(), index, stopping.clone())))
            .collect();
        AgentFleet { shared, tasks, stop }
    }

    pub fn agents(&self) -> usize {
        self.shared.settings.agents
    }

    pub fn online(&self) -> usize {
        self.shared.online.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Waits until every agent has been set online once.
    pub async fn wait_until_online(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.online() < self.agents() {
            if Instant::now() >= deadline {
                let errors = self.shared.counters.snapshot().errors_by_code;
                anyhow::bail!(
                    "only {} of {} agents came online within {timeout:?} (connected: {}, errors: {errors:?})",
                    self.online(),
                    self.agents(),
                    self.connected()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Counts double-assignment suspicions that outlived their grace.
    pub fn settle(&self) {
        self.shared.holders.settle(&self.shared.counters, DOUBLE_ASSIGNMENT_GRACE);
    }

    pub fn snapshot(&self) -> FleetSnapshot {
        self.shared.counters.snapshot()
    }

    /// Closes every session and waits for the tasks.
    pub async fn stop(self) -> FleetSnapshot {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.shared.holders.settle(&self.shared.counters, Duration::ZERO);
        self.shared.counters.snapshot()
    }
}

// ---------------------------------------------------------------------------
// Frames, read leniently: only the fields the harness needs, so that a
// reference implementation with fewer fields is read the same way.

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum IncomingFrame {
    Welcome,
    Snapshot {
        #[serde(default)]
        seq: u64,
        #[serde(default)]
        conversations: Vec<ConversationView>,
    },
    Assigned {
        seq: u64,
        conversation: ConversationView,
    },
    Message {
        seq: u64,
        conversation_id: String,
        message: MessageView,
    },
    Unassigned {
        seq: u64,
        conversation_id: String,
    },
    Status {
        seq: u64,
    },
    Sla {
        seq: u64,
    },
    Window {
        seq: u64,
    },
    #[serde(rename = "ok")]
    Answer {
        #[serde(default)]
        id: Option<Value>,
    },
    Error {
        #[serde(default)]
        id: Option<Value>,
        #[serde(default)]
        code: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct ConversationView {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    messages: Option<Vec<MessageView>>,
}

#[derive(Deserialize)]
struct MessageView {
    id: String,
    #[serde(default)]
    direction: Option<String>,
}

impl MessageView {
    fn is_inbound(&self) -> bool {
        self.direction.as_deref() == Some("in")
    }
}

// ---------------------------------------------------------------------------
// One agent.

#[derive(Clone, Copy)]
struct DeliveredMessage {
    phase: u32,
    index: u64,
    customer_seq: u32,
}

struct HeldConversation {
    session_ended: bool,
    reply_scheduled: bool,
    closing: bool,
    /// Replies sent and not answered yet: a close now could overtake them
    /// (the server handles a session's requests concurrently).
    sends_in_flight: u32,
    close_attempts: u32,
    last_customer_message_at: Instant,
    /// The customer message with the highest sequence number delivered so far.
    latest_delivered: Option<DeliveredMessage>,
}

impl HeldConversation {
    fn new(now: Instant) -> HeldConversation {
        HeldConversation {
            session_ended: false,
            reply_scheduled: false,
            closing: false,
            sends_in_flight: 0,
            close_attempts: 0,
            last_customer_message_at: now,
            latest_delivered: None,
        }
    }
}

enum PendingRequest {
    SetStatus,
    Send { conversation_id: String },
    Close { conversation_id: String },
}

enum TimerAction {
    Reply(String),
    IdleCheck(String),
    RetryClose(String),
}

struct Timer {
    deadline: Instant,
    order: u64,
    action: TimerAction,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.order) == (other.deadline, other.order)
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.deadline, self.order).cmp(&(other.deadline, other.order))
    }
}

/// The last phase looked up, so most lookups take no lock.
#[derive(Default)]
struct PhaseCache {
    cached: Option<Arc<PhaseLedger>>,
}

impl PhaseCache {
    fn get(&mut self, ledger: &Ledger, id: u32) -> Option<Arc<PhaseLedger>> {
        if let Some(phase) = &self.cached
            && phase.id == id
        {
            return Some(phase.clone());
        }
        let phase = ledger.phase(id)?;
        self.cached = Some(phase.clone());
        Some(phase)
    }
}

struct AgentState {
    index: usize,
    last_seq: Option<u64>,
    held: HashMap<String, HeldConversation>,
    pending: HashMap<u64, PendingRequest>,
    next_request_id: u64,
    timers: BinaryHeap<Reverse<Timer>>,
    next_timer_order: u64,
    outbox: Vec<String>,
    phases: PhaseCache,
    reported_online: bool,
    closes_requested: u64,
}

enum SessionEnd {
    Stopped,
    Lost { was_connected: bool },
}

async fn agent_loop(shared: Arc<FleetShared>, index: usize, mut stop: watch::Receiver<bool>) {
    let mut agent = AgentState::new(index);
    let mut backoff = RECONNECT_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        match run_session(&shared, &mut agent, &mut stop).await {
            SessionEnd::Stopped => return,
            SessionEnd::Lost { was_connected } => {
                if was_connected {
                    backoff = RECONNECT_MIN;
                }
            }
        }
        agent.on_disconnect();
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

async fn run_session(shared: &FleetShared, agent: &mut AgentState, stop: &mut watch::Receiver<bool>) -> SessionEnd {
    let token = crate::agent_token(&shared.settings.token_prefix, agent.index);
    // Held until the handshake is over: at most `connect_concurrency` at once.
    let permit = match &shared.connect_gate {
        Some(gate) => tokio::select! {
            permit = gate.clone().acquire_owned() => permit.ok(),
            _ = stop.changed() => return SessionEnd::Stopped,
        },
        None => None,
    };
    // 4 KiB read buffers and no write buffer (see `sim::agent::client_config`).
    let connecting = sim::agent::connect(&shared.settings.base_url, &token, Protocol::Json, agent.last_seq);
    let socket = tokio::select! {
        connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match connected {
            Ok(Ok((socket, _response))) => socket,
            Ok(Err(error)) => {
                tracing::debug!(agent = agent.index, %error, "agent cannot connect");
                return SessionEnd::Lost { was_connected: false };
            }
            Err(_) => return SessionEnd::Lost { was_connected: false },
        },
        _ = stop.changed() => return SessionEnd::Stopped,
    };
    drop(permit);
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let end = drive_session(shared, agent, stop, socket).await;
    shared.connected.fetch_sub(1, Ordering::Relaxed);
    end
}

async fn drive_session(
    shared: &FleetShared,
    agent: &mut AgentState,
    stop: &mut watch::Receiver<bool>,
    socket: Socket,
) -> SessionEnd {
    let lost = SessionEnd::Lost { was_connected: true };
    let (mut sink, mut stream) = socket.split();
    agent.request(PendingRequest::SetStatus, json!({"type": "set_status", "status": "online"}));
    agent.reschedule_all(shared, Instant::now());
    let far_future = Instant::now() + Duration::from_secs(3600 * 24);
    let sleep = tokio::time::sleep_until(far_future.into());
    tokio::pin!(sleep);
    loop {
        if !agent.outbox.is_empty() {
            for frame in agent.outbox.drain(..) {
                if sink.feed(WsMessage::text(frame)).await.is_err() {
                    return lost;
                }
            }
            if sink.flush().await.is_err() {
                return lost;
            }
        }
        let next_deadline = agent.timers.peek().map(|Reverse(timer)| timer.deadline);
        if let Some(deadline) = next_deadline {
            sleep.as_mut().reset(deadline.into());
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    return SessionEnd::Stopped;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => agent.on_text(shared, text.as_str(), Instant::now()),
                Some(Ok(WsMessage::Binary(_))) => {
                    shared.counters.undecodable_frames.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return lost,
                Some(Ok(_)) => {}
            },
            () = &mut sleep, if next_deadline.is_some() => agent.on_timers(shared, Instant::now()),
        }
    }
}

impl AgentState {
    fn new(index: usize) -> AgentState {
        AgentState {
            index,
            last_seq: None,
            held: HashMap::new(),
            pending: HashMap::new(),
            next_request_id: 1,
            timers: BinaryHeap::new(),
            next_timer_order: 0,
            outbox: Vec::new(),
            phases: PhaseCache::default(),
            reported_online: false,
            closes_requested: 0,
        }
    }

    fn request(&mut self, pending: PendingRequest, mut frame: Value) {
        let id = self.next_request_id;
        self.next_request_id += 1;
        frame["id"] = json!(id);
        self.pending.insert(id, pending);
        self.outbox.push(frame.to_string());
    }

    fn schedule(&mut self, deadline: Instant, action: TimerAction) {
        let order = self.next_timer_order;
        self.next_timer_order += 1;
        self.timers.push(Reverse(Timer { deadline, order, action }));
    }

    /// Answers to requests of a dropped session will never come.
    fn on_disconnect(&mut self) {
        self.pending.clear();
        self.timers.clear();
        self.outbox.clear();
        for held in self.held.values_mut() {
            held.reply_scheduled = false;
            held.closing = false;
            held.sends_in_flight = 0;
        }
    }

    /// After (re)connecting, every held conversation gets a reply scheduled.
    fn reschedule_all(&mut self, shared: &FleetShared, now: Instant) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for conversation_id in ids {
            self.schedule_reply(shared, &conversation_id, now);
        }
    }

    fn schedule_reply(&mut self, shared: &FleetShared, conversation_id: &str, now: Instant) {
        let Some(held) = self.held.get_mut(conversation_id) else { return };
        if held.reply_scheduled || held.closing {
            return;
        }
        held.reply_scheduled = true;
        self.schedule(now + shared.settings.think_time, TimerAction::Reply(conversation_id.to_owned()));
    }

    /// Takes a new event's seq: false when it is one already seen (replayed).
    fn accept_event(&mut self, shared: &FleetShared, seq: u64) -> bool {
        if let Some(last) = self.last_seq {
            if seq <= last {
                return false;
            }
            if seq > last + 1 {
                shared.counters.seq_gaps.fetch_add(seq - last - 1, Ordering::Relaxed);
            }
        }
        self.last_seq = Some(seq);
        true
    }

    fn on_text(&mut self, shared: &FleetShared, text: &str, now: Instant) {
        shared.counters.frames.fetch_add(1, Ordering::Relaxed);
        let frame: IncomingFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(error) => {
                shared.counters.undecodable_frames.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(agent = self.index, %error, "a frame the harness cannot read");
                return;
            }
        };
        match frame {
            IncomingFrame::Welcome | IncomingFrame::Other => {}
            IncomingFrame::Snapshot { seq, conversations } => self.on_snapshot(shared, seq, conversations, now),
            IncomingFrame::Assigned { seq, conversation } => {
                if self.accept_event(shared, seq) {
                    self.on_assigned(shared, conversation, now);
                }
            }
            IncomingFrame::Message { seq, conversation_id, message } => {
                if self.accept_event(shared, seq) && message.is_inbound() {
                    self.on_customer_message(shared, &conversation_id, &message, now);
                }
            }
            IncomingFrame::Unassigned { seq, conversation_id } => {
                if self.accept_event(shared, seq) {
                    self.held.remove(&conversation_id);
                    shared.holders.released(&conversation_id, self.index);
                }
            }
            IncomingFrame::Status { seq } | IncomingFrame::Sla { seq } | IncomingFrame::Window { seq } => {
                self.accept_event(shared, seq);
            }
            IncomingFrame::Answer { id } => self.on_answer(shared, id, now),
            IncomingFrame::Error { id, code } => self.on_error(shared, id, &code, now),
        }
    }

    fn check_capacity(&self, shared: &FleetShared) {
        if let Some(capacity) = shared.settings.capacity
            && self.held.len() > capacity as usize
        {
            shared.counters.capacity_exceeded.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_snapshot(&mut self, shared: &FleetShared, seq: u64, conversations: Vec<ConversationView>, now: Instant) {
        self.last_seq = Some(seq);
        let mut previously_held = std::mem::take(&mut self.held);
        for conversation in conversations {
            if conversation.status.as_deref() == Some("closed") {
                continue;
            }
            shared.holders.assigned(&conversation.id, self.index);
            let mut held = previously_held.remove(&conversation.id).unwrap_or_else(|| HeldConversation::new(now));
            let messages = conversation.messages.unwrap_or_default();
            self.deliver_all(shared, &mut held, &messages, DeliveryKind::Snapshot, now);
            self.held.insert(conversation.id, held);
        }
        // What this agent held and the snapshot no longer shows was released
        // while it was away.
        for conversation_id in previously_held.into_keys() {
            shared.holders.released(&conversation_id, self.index);
        }
        self.check_capacity(shared);
        self.reschedule_all(shared, now);
    }

    fn on_assigned(&mut self, shared: &FleetShared, conversation: ConversationView, now: Instant) {
        if let Some(counter) = shared.counters.assignments.get(self.index - 1) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        shared.holders.assigned(&conversation.id, self.index);
        let mut held = self.held.remove(&conversation.id).unwrap_or_else(|| HeldConversation::new(now));
        let messages = conversation.messages.unwrap_or_default();
        self.deliver_all(shared, &mut held, &messages, DeliveryKind::Assigned, now);
        self.held.insert(conversation.id.clone(), held);
        self.check_capacity(shared);
        self.schedule_reply(shared, &conversation.id, now);
    }

    fn on_customer_message(
        &mut self,
        shared: &FleetShared,
        conversation_id: &str,
        message: &MessageView,
        now: Instant,
    ) {
        let mut held = match self.held.remove(conversation_id) {
            Some(held) => held,
            None => {
                shared.counters.messages_for_unheld.fetch_add(1, Ordering::Relaxed);
                let mut stray = HeldConversation::new(now);
                self.deliver(shared, &mut stray, &message.id, DeliveryKind::LiveEvent, now);
                return;
            }
        };
        self.deliver(shared, &mut held, &message.id, DeliveryKind::LiveEvent, now);
        self.held.insert(conversation_id.to_owned(), held);
        self.schedule_reply(shared, conversation_id, now);
    }

    fn deliver_all(
        &mut self,
        shared: &FleetShared,
        held: &mut HeldConversation,
        messages: &[MessageView],
        kind: DeliveryKind,
        now: Instant,
    ) {
        for message in messages.iter().filter(|message| message.is_inbound()) {
            self.deliver(shared, held, &message.id, kind, now);
        }
    }

    /// Records one delivered customer message and checks its order.
    fn deliver(
        &mut self,
        shared: &FleetShared,
        held: &mut HeldConversation,
        wamid: &str,
        kind: DeliveryKind,
        now: Instant,
    ) {
        let Some(tag) = shared.ledger.builder().parse_wamid(wamid) else {
            shared.counters.foreign_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(phase) = self.phases.get(&shared.ledger, tag.phase) else {
            shared.counters.foreign_messages.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let outcome = phase.record_delivery(tag.index, now, kind);
        if outcome == DeliveryOutcome::First {
            held.last_customer_message_at = now;
            if let Some(latest) = held.latest_delivered {
                self.check_order(shared, &phase, &tag, latest);
            }
        }
        if tag.ends_session {
            held.session_ended = true;
        }
        if held.latest_delivered.is_none_or(|latest| tag.customer_seq > latest.customer_seq) {
            held.latest_delivered =
                Some(DeliveredMessage { phase: tag.phase, index: tag.index, customer_seq: tag.customer_seq });
        }
    }

    /// `tag` arrives after `latest` although it comes earlier in the
    /// customer's sequence: wrong if it had been acknowledged before `latest`
    /// was even scheduled.
    fn check_order(&mut self, shared: &FleetShared, phase: &PhaseLedger, tag: &MessageTag, latest: DeliveredMessage) {
        if tag.customer_seq >= latest.customer_seq {
            return;
        }
        let Some(latest_phase) = self.phases.get(&shared.ledger, latest.phase) else { return };
        if phase.acknowledged_before(tag.index, latest_phase.scheduled_at(latest.index)) {
            phase.record_out_of_order();
        }
    }

    fn on_timers(&mut self, shared: &FleetShared, now: Instant) {
        while let Some(Reverse(timer)) = self.timers.peek() {
            if timer.deadline > now {
                break;
            }
            let Some(Reverse(timer)) = self.timers.pop() else { break };
            match timer.action {
                TimerAction::Reply(conversation_id) => self.reply(shared, conversation_id, now),
                TimerAction::IdleCheck(conversation_id) => {
                    let idle = self.held.get(&conversation_id).is_some_and(|held| {
                        !held.closing
                            && !held.reply_scheduled
                            && held.sends_in_flight == 0
                            && now.saturating_duration_since(held.last_customer_message_at)
                                >= shared.settings.idle_close
                    });
                    if idle {
                        self.close(conversation_id);
                    }
                }
                TimerAction::RetryClose(conversation_id) => {
                    if self.held.get(&conversation_id).is_some_and(|held| !held.closing) {
                        self.close(conversation_id);
                    }
                }
            }
        }
    }

    fn reply(&mut self, shared: &FleetShared, conversation_id: String, now: Instant) {
        let Some(held) = self.held.get_mut(&conversation_id) else { return };
        held.reply_scheduled = false;
        if held.closing {
            return;
        }
        held.sends_in_flight += 1;
        self.request(
            PendingRequest::Send { conversation_id: conversation_id.clone() },
            json!({"type": "send", "conversation_id": conversation_id, "text": "Thanks for writing! Let me check that for you."}),
        );
        self.schedule(now + shared.settings.idle_close, TimerAction::IdleCheck(conversation_id));
    }

    fn close(&mut self, conversation_id: String) {
        let Some(held) = self.held.get_mut(&conversation_id) else { return };
        held.closing = true;
        held.close_attempts += 1;
        let outcome = OUTCOMES[(self.closes_requested as usize) % OUTCOMES.len()];
        self.closes_requested += 1;
        self.request(
            PendingRequest::Close { conversation_id: conversation_id.clone() },
            json!({"type": "close", "conversation_id": conversation_id, "fields": {"outcome": outcome}}),
        );
    }

    /// A reply was answered; true when the conversation should now be closed
    /// (the customer's session is over and no other reply is on its way).
    fn reply_answered(&mut self, conversation_id: &str) -> bool {
        let Some(held) = self.held.get_mut(conversation_id) else { return false };
        held.sends_in_flight = held.sends_in_flight.saturating_sub(1);
        held.session_ended && !held.closing && held.sends_in_flight == 0
    }

    fn on_answer(&mut self, shared: &FleetShared, id: Option<Value>, _now: Instant) {
        let Some(pending) = id.as_ref().and_then(Value::as_u64).and_then(|id| self.pending.remove(&id)) else {
            return;
        };
        match pending {
            PendingRequest::SetStatus => {
                if !self.reported_online {
                    self.reported_online = true;
                    shared.online.fetch_add(1, Ordering::Relaxed);
                }
            }
            PendingRequest::Send { conversation_id } => {
                shared.counters.replies_ok.fetch_add(1, Ordering::Relaxed);
                if self.reply_answered(&conversation_id) {
                    self.close(conversation_id);
                }
            }
            PendingRequest::Close { .. } => {
                shared.counters.closes_ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_error(&mut self, shared: &FleetShared, id: Option<Value>, code: &str, now: Instant) {
        shared.counters.count_error(code);
        let Some(pending) = id.as_ref().and_then(Value::as_u64).and_then(|id| self.pending.remove(&id)) else {
            return;
        };
        match pending {
            PendingRequest::SetStatus => {
                tracing::warn!(agent = self.index, code, "the server refused to set the agent online");
            }
            PendingRequest::Send { conversation_id } => {
                // Whatever went wrong, a finished conversation is still closed.
                if self.reply_answered(&conversation_id) {
                    self.close(conversation_id);
                }
            }
            PendingRequest::Close { conversation_id } => {
                let Some(held) = self.held.get_mut(&conversation_id) else { return };
                held.closing = false;
                if held.close_attempts < MAX_CLOSE_ATTEMPTS {
                    self.schedule(now + CLOSE_RETRY_AFTER, TimerAction::RetryClose(conversation_id));
                }
            }
        }
    }
}
