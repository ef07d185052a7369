//! The conversation actor's decisions, as pure functions: given the thread
//! and open conversation as they stand, one input and the time, what the
//! records become, which events the log gets, what the store writes and what
//! the actor does once that is committed. No clock, no store, no actors: the
//! actor (`conversation.rs`) reads what a decision needs first, passes it in,
//! then commits the decision's writes and events in one batch and performs
//! its effects. Unit tests call [`decide`] directly.
//!
//! Every decision that changes a record says so in the event log, in the same
//! batch as the change ([`Decision::into_batch`]): an acknowledged change has
//! its event and an event its change.

use protocol::events::{Actor, Event, EventBody, FieldChange, Window};
use protocol::model::{Contact, Conversation, ConversationStatus, DeliveryStatus, Direction, Message, Route};
use protocol::time::UnixMs;
use protocol::webhook::Status;
use protocol::ws::{ServerFrame, SlaKind, SlaState, TemplateRequest, UnassignReason};
use protocol::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};
use storage::{Batch, ContactRecord, ConversationRecord, IngestMessage, Op, SendIntent, StoredMessage, ThreadRecord};

use crate::copilot::{self, CopilotSpec, FlowSpec};
use crate::deadlines::{self, Fired, Policies};
use crate::routing::{self, ContactFacts, Facts, Routing, RoutingTable, Trigger};
use crate::rules;
use crate::settings::{ContactWords, Schemas};
use crate::timers::DeadlineKind;

/// What a decision reads: the thread and its open conversation as the actor
/// holds them.
#[derive(Clone, Copy, Debug)]
pub struct Current<'a> {
    pub thread_key: &'a str,
    pub thread: Option<&'a ThreadRecord>,
    pub open: Option<&'a ConversationRecord>,
}

/// The configuration decisions depend on.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub policies: &'a Policies,
    /// The disposition schemas: the conversation's current team's applies.
    pub schemas: Schemas<'a>,
    /// Where conversations go (contract §7).
    pub routing: &'a RoutingTable,
    /// The customer's opt-out and opt-in words (PROTOCOL §8).
    pub contact_words: &'a ContactWords,
}

/// One thing that happened to the conversation, with what the actor read
/// from the store for it.
#[derive(Debug)]
pub enum Input {
    /// A customer's message. `inbox_seq` is the inbox entry it comes from,
    /// `None` for a webhook's message applied directly (the batch then
    /// claims its wamid). `new_conversation_id` is the id a conversation
    /// opened by it takes (the actor allocates one when none is open).
    /// `contact` is the customer's contact record, which the actor reads
    /// only when the text is an opt-out or opt-in word
    /// ([`opt_word_of`]; `None` otherwise, and when there is none).
    MessageIn {
        ingest: IngestMessage,
        inbox_seq: Option<u64>,
        new_conversation_id: Option<String>,
        contact: Option<Box<ContactRecord>>,
        /// `Some` when the co-pilot's model hook is on: how long its calls
        /// may take (ms). A message of a conversation the co-pilot has,
        /// whose step the hook would read or summarize, is then committed
        /// with its step pending (`CopilotState::pending`, due by then at
        /// the latest) and the step comes as [`Input::CopilotReading`].
        copilot_model_wait_ms: Option<i64>,
    },
    /// The model hook read the pending answer `message_id`
    /// (`CopilotState::pending`): its checked reading
    /// (`copilot::check_interpretation`; `None`: the built-in one stands)
    /// and the tokens its calls used.
    CopilotReading { conversation_id: String, message_id: String, reading: Option<copilot::ModelInput>, tokens: u64 },
    /// Meta's status for an outbound message, from the inbox. `stored` is
    /// the message it is about (its index and record), when found.
    StatusIn { inbox_seq: u64, conversation_id: String, status: Box<Status>, stored: Option<(u32, Box<StoredMessage>)> },
    /// Meta accepted a send as `wamid`. `record` is its conversation (the
    /// open one, or a closed one read from the store).
    SendAccepted { record: Box<ConversationRecord>, intent: Box<SendIntent>, wamid: String },
    /// The router or a team reserved a slot with `agent_id` for the
    /// conversation. `messages` are the conversation's messages so far (the
    /// `assigned` frame carries them).
    Assign { conversation_id: String, agent_id: String, messages: Vec<Message>, route: Route },
    /// The agent went offline (after its grace period) or away for good.
    Unassign { conversation_id: String, agent_id: String, reason: UnassignReason },
    /// A user hands the open conversation to `target`, whose slot the actor
    /// has already reserved.
    TransferToAgent { by: String, target: String, note: Option<String>, messages: Vec<Message> },
    /// A user sends the open conversation to a team's queue (the actor has
    /// checked the team exists).
    TransferToTeam { by: String, team: String, note: Option<String> },
    /// Its team passed its overflow bound: from the queue of `from_team` to
    /// partner team `to_team`.
    Overflow { conversation_id: String, from_team: String, to_team: String },
    /// A deadline armed for the conversation came due.
    Deadline { conversation_id: String, kind: DeadlineKind, due: UnixMs },
    /// A user sets fields on the open conversation.
    SetFields { by: String, fields: Map<String, Value> },
    /// A user closes the open conversation, perhaps setting fields with it.
    Close { by: String, fields: Map<String, Value> },
}

/// What happens after the decision's batch is committed.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send the conversation where routing decided (the `routed` event
    /// says why): an agent to offer it first, else or then its team.
    Route(Box<Routing>),
    /// The agent no longer holds the conversation: free its slot.
    ReleaseAgent { agent_id: String, conversation_id: String },
    /// The conversation no longer waits in this team's queue.
    LeaveTeamQueue { team_id: String, conversation_id: String },
    /// The reserved slot was not used: give it back.
    CancelReservation { agent_id: String, conversation_id: String },
    /// The reserved assignment is committed: the agent holds the conversation.
    ConfirmReservation { agent_id: String, conversation_id: String },
    /// Send this template to the customer, as the system (a team's
    /// `closed_template`), through the normal outbound path.
    SendTemplate(TemplateRequest),
    /// The co-pilot says this, in order, through the normal outbound path
    /// (`record`: its conversation after the decision, perhaps closed).
    CopilotSay { record: Box<ConversationRecord>, say: Vec<copilot::Say> },
}

/// Who sends what the system sends (`closed_template`): the `sent_by` of
/// its send intents. Agent ids may not start with `@`.
pub const SYSTEM_SENDER: &str = "@system";

/// Who sends what the co-pilot says: the `sent_by` of its send intents.
pub const COPILOT_SENDER: &str = "@copilot";

/// The event log's actor for a send intent's `sent_by`.
pub fn sender_actor(sent_by: &str) -> Actor {
    match sent_by {
        SYSTEM_SENDER => Actor::System,
        COPILOT_SENDER => Actor::Copilot,
        _ => Actor::user(sent_by),
    }
}

/// An outbound message's `author` for a send intent's `sent_by`: the
/// audit log's label of its actor (`copilot`, `system`, `user:{id}`).
pub fn author_of(sent_by: &str) -> String {
    sender_actor(sent_by).label()
}

/// A decision: the records after it, the store's writes (agent frames
/// included), the log's events and what follows the commit. The client's
/// answer, when there is one, is `answer`.
#[derive(Debug, Default)]
pub struct Decision {
    /// The thread after the decision (`None`: no thread was involved).
    pub thread: Option<ThreadRecord>,
    /// The conversation after the decision (`None`: none was touched).
    pub record: Option<ConversationRecord>,
    /// Whether `record` is the thread's open conversation after the decision.
    pub record_is_open: bool,
    pub writes: Vec<Op>,
    pub events: Vec<Event>,
    pub effects: Vec<Effect>,
    /// The body of the answer to a client's request.
    pub answer: Option<Map<String, Value>>,
    /// A conversation was opened by this decision.
    pub opened: bool,
}

impl Decision {
    /// The contact record this decision writes, if it writes one.
    fn contact_after(&self) -> Option<ContactRecord> {
        self.writes.iter().rev().find_map(|op| match op {
            Op::PutContact(contact) => Some(contact.as_ref().clone()),
            _ => None,
        })
    }

    /// The writes then the events, as one batch: events come after any claim
    /// so that a refused claim skips them with the rest of the batch.
    pub fn into_batch(&mut self) -> Batch {
        let mut batch = std::mem::take(&mut self.writes);
        batch.reserve(self.events.len());
        batch.extend(self.events.drain(..).map(|event| Op::Event(Box::new(event))));
        batch
    }
}

/// Decides what `input` does to the conversation at `now`. A business
/// refusal (a field invalid or missing) is `Err` and changes nothing.
pub fn decide(current: Current<'_>, input: Input, now: UnixMs, policy: Policy<'_>) -> Result<Decision, ApiError> {
    match input {
        Input::MessageIn { ingest, inbox_seq, new_conversation_id, contact, copilot_model_wait_ms } => {
            let opted_out = opt_word_of(&ingest, policy.contact_words);
            let arrival = (ingest, inbox_seq, new_conversation_id);
            let mut decision = message_in(current, arrival, contact.as_deref(), copilot_model_wait_ms, now, policy);
            if let Some(opted_out) = opted_out {
                let contact = decision.contact_after().or(contact.map(|contact| *contact));
                opt_contact(&mut decision, contact.as_ref(), opted_out, now);
            }
            Ok(decision)
        }
        Input::CopilotReading { conversation_id, message_id, reading, tokens } => {
            let Some(open) = current.open.filter(|open| open.conversation.id == conversation_id) else {
                return Ok(Decision::default());
            };
            Ok(copilot_reading(current, open.clone(), &message_id, reading, tokens, now, policy))
        }
        Input::StatusIn { inbox_seq, conversation_id, status, stored } => Ok(status_in(
            current,
            inbox_seq,
            conversation_id,
            *status,
            stored.map(|(index, stored)| (index, *stored)),
            now,
        )),
        Input::SendAccepted { record, intent, wamid } => {
            Ok(send_accepted(current, *record, *intent, wamid, now, policy))
        }
        Input::Assign { conversation_id, agent_id, messages, route } => {
            Ok(assign(current, conversation_id, agent_id, messages, route, now, policy))
        }
        Input::Unassign { conversation_id, agent_id, reason } => {
            Ok(unassign(current, conversation_id, agent_id, reason, now, policy))
        }
        Input::TransferToAgent { by, target, note, messages } => {
            transfer_to_agent(current, (by, note), target, messages, now, policy)
        }
        Input::TransferToTeam { by, team, note } => transfer_to_team(current, (by, note), team, now, policy),
        Input::Overflow { conversation_id, from_team, to_team } => {
            Ok(overflow(current, conversation_id, from_team, to_team, now, policy))
        }
        Input::Deadline { conversation_id, kind, due } => {
            Ok(deadline(current, conversation_id, kind, due, now, policy))
        }
        Input::SetFields { by, fields } => set_fields(current, by, fields, now, policy),
        Input::Close { by, fields } => close(current, by, fields, now, policy),
    }
}

/// Whether a customer's message opts them out (`Some(true)`) or back in
/// (`Some(false)`): a text message whose whole body, trimmed, is one of the
/// words, in any case. The actor asks this to know when to read the
/// contact's record for [`Input::MessageIn`].
pub fn opt_word_of(ingest: &IngestMessage, words: &ContactWords) -> Option<bool> {
    if ingest.message.kind != "text" {
        return None;
    }
    crate::contacts::opt_change(&ingest.message.text.as_ref()?.body, words)
}

/// An opt-out or opt-in word: the contact's record (`contact`, as the actor
/// read it) changes, with its `contact_updated` event, in the message's own
/// batch (after its claim, so a duplicate skips them too). Nothing else
/// changes: replies inside the window still go out.
fn opt_contact(decision: &mut Decision, contact: Option<&ContactRecord>, opted_out: bool, now: UnixMs) {
    let Some(record) = &decision.record else { return };
    let conversation = &record.conversation;
    let Some((after, change)) = crate::contacts::opt(contact, &conversation.contact.wa_id, opted_out, now) else {
        return; // already so
    };
    decision.writes.push(Op::PutContact(Box::new(after)));
    decision.events.push(crate::contacts::contact_event(
        &conversation.contact.wa_id,
        Some((&conversation.id, &conversation.phone_number_id)),
        now,
        Actor::Customer,
        vec![change],
    ));
}

/// An event about `record`'s conversation.
pub fn event_of(record: &ConversationRecord, at: UnixMs, actor: Actor, body: EventBody) -> Event {
    Event {
        at,
        conversation_id: Some(record.conversation.id.clone()),
        contact: Some(record.conversation.contact.wa_id.clone()),
        phone_number_id: Some(record.conversation.phone_number_id.clone()),
        actor,
        body,
    }
}

/// What taking a conversation from its agent says, to the agent (the
/// `unassigned` frame, a write) and to the log (the `unassigned` event).
fn unassigned(
    record: &ConversationRecord,
    agent_id: &str,
    reason: UnassignReason,
    by: Actor,
    at: UnixMs,
) -> (Op, Event) {
    let frame = ServerFrame::Unassigned { seq: 0, conversation_id: record.conversation.id.clone(), reason };
    let write = Op::AgentEvent { agent_id: agent_id.to_owned(), frame: Box::new(frame) };
    (write, event_of(record, at, by, EventBody::Unassigned { agent_id: agent_id.to_owned(), reason }))
}

/// The `routed` event: PROTOCOL §7's `Route` for why routing is asked now
/// (`default`, `returning`, `transfer`, `idle`, `offline`).
pub fn routed_event(record: &ConversationRecord, at: UnixMs, actor: Actor, route: &Route) -> Event {
    let route = serde_json::to_value(route).unwrap_or(Value::Null);
    event_of(record, at, actor, EventBody::Routed { route, team_id: record.conversation.team.clone() })
}

/// Asks routing where `record`'s conversation goes now (`trigger` says
/// why), and records the answer on it: its team and its route.
fn route_again(record: &mut ConversationRecord, trigger: Trigger, policy: Policy<'_>) -> Routing {
    let routing = policy.routing.again(trigger, &record.conversation.phone_number_id);
    record.conversation.team = routing.team.clone();
    record.route = Some(routing.route.clone());
    routing
}

/// What routing knows of a contact from its record (§8).
pub fn contact_facts(contact: Option<&ContactRecord>) -> ContactFacts {
    contact.map_or_else(ContactFacts::default, |contact| ContactFacts {
        city: contact.city.clone(),
        region: contact.region.clone(),
        dealer: contact.dealer.clone(),
        owner: contact.owner.clone(),
        attributes: contact.attributes.clone(),
    })
}

/// A customer's message: `arrival` is the message, its inbox entry (`None`
/// when applied straight from the webhook) and the id a conversation it
/// opens takes; `contact` the customer's record (read when a conversation
/// opens, for routing).
fn message_in(
    current: Current<'_>,
    (ingest, inbox_seq, new_conversation_id): (IngestMessage, Option<u64>, Option<String>),
    contact_record: Option<&ContactRecord>,
    copilot_model_wait_ms: Option<i64>,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let IngestMessage { phone_number_id, contact_key, contact, message } = ingest;
    let profile_name = contact.as_ref().and_then(|contact| contact.profile.as_ref()?.name.clone());
    let mut thread = current.thread.cloned().unwrap_or_else(|| ThreadRecord {
        contact: Contact { wa_id: contact_key.clone(), name: profile_name.clone() },
        phone_number_id: phone_number_id.clone(),
        open_conversation: None,
        last_closed_by: None,
        last_inbox_seq: 0,
    });
    if profile_name.is_some() {
        thread.contact.name = profile_name;
    }
    if let Some(seq) = inbox_seq {
        thread.last_inbox_seq = seq;
    }
    let opened = current.open.is_none();
    let mut routed = None;
    let mut record = match current.open {
        Some(record) => record.clone(),
        None => {
            let id = new_conversation_id.expect("the actor allocates an id when no conversation is open");
            thread.open_conversation = Some(id.clone());
            let source = protocol::rules::source_of(&message);
            let known = contact_facts(contact_record);
            let text = message.text.as_ref().map(|text| text.body.as_str());
            let facts = Facts {
                trigger: Trigger::Open,
                phone_number_id: &phone_number_id,
                text,
                interactive_id: interactive_id(&message),
                source: &source,
                contact: &known,
                last_closer: thread.last_closed_by.as_deref(),
            };
            let routing = routing::route(&facts, policy.routing);
            let mut record = new_conversation(id, &thread, current.thread_key, source, routing.team.as_deref(), now);
            record.route = Some(routing.route.clone());
            routed = Some(routing);
            record
        }
    };
    record.conversation.contact = thread.contact.clone();
    let shown = protocol::rules::inbound_message(&message, now);
    let team_policy = policy.policies.of(record.conversation.team.as_deref());
    // A new conversation whose team has a flow for its source starts with
    // the co-pilot (status `bot`): its first-response clock starts at the
    // hand-over.
    let copilot_start = if opened { copilot_flow_of(policy, &record) } else { None };
    if opened {
        if copilot_start.is_none() {
            record.clocks.frt =
                Some(deadlines::sla_clock(now, team_policy.sla.first_response_s, &team_policy.schedule));
        }
        record.clocks.trt = Some(deadlines::sla_clock(now, team_policy.sla.resolution_s, &team_policy.schedule));
        if message.referral.is_some() {
            record.clocks.entry_at = Some(shown.at);
        }
    } else if record.clocks.last_agent_reply_at.is_some()
        && record.clocks.nrt.as_ref().is_none_or(|clock| clock.stopped_at.is_some())
    {
        record.clocks.nrt = Some(deadlines::sla_clock(now, team_policy.sla.next_response_s, &team_policy.schedule));
    }
    let previous_service_until = record.conversation.service_until;
    let index = record.message_count;
    record.message_count += 1;
    record.last_customer_at = Some(record.last_customer_at.map_or(shown.at, |at| at.max(shown.at)));
    record.conversation.service_until = record.last_customer_at.map(deadlines::service_until);
    let raw = serde_json::to_string(&message).ok();
    let conversation_id = record.conversation.id.clone();
    let mut decision = Decision { opened, record_is_open: true, ..Decision::default() };
    let writes = &mut decision.writes;
    match inbox_seq {
        Some(seq) => writes.push(Op::DeleteInbox(seq)),
        None => writes.push(Op::ClaimInbound(message.id.clone())),
    }
    // The thread changes when a conversation opens, the name changes
    // or an inbox entry is applied; not on every message.
    if current.thread != Some(&thread) {
        writes.push(Op::PutThread { key: current.thread_key.to_owned(), record: thread.clone() });
    }
    writes.push(Op::PutConversation(Box::new(record.clone())));
    writes.push(Op::PutMessage {
        conversation_id: conversation_id.clone(),
        thread_key: current.thread_key.to_owned(),
        index,
        message: Box::new(StoredMessage { message: shown.clone(), raw }),
    });
    if let (ConversationStatus::Assigned, Some(agent)) = (record.conversation.status, &record.conversation.agent) {
        writes.push(Op::AgentEvent {
            agent_id: agent.clone(),
            frame: Box::new(ServerFrame::Message {
                seq: 0,
                conversation_id: conversation_id.clone(),
                message: shown.clone(),
            }),
        });
        if record.conversation.service_until != previous_service_until {
            writes.push(Op::AgentEvent { agent_id: agent.clone(), frame: Box::new(window_frame(&record)) });
        }
    }
    let events = &mut decision.events;
    if opened {
        events.push(event_of(
            &record,
            now,
            Actor::Customer,
            EventBody::Opened { source: record.conversation.source.clone() },
        ));
    }
    events.push(event_of(
        &record,
        now,
        Actor::Customer,
        EventBody::MessageIn { wamid: message.id.clone(), message_type: shown.kind.clone(), text: shown.text.clone() },
    ));
    if let Some(until) = record.conversation.service_until.filter(|until| Some(*until) != previous_service_until) {
        let still_open = previous_service_until.is_some_and(|previous| now < previous);
        let body = if still_open {
            EventBody::WindowRefreshed { window: Window::Service, until }
        } else {
            EventBody::WindowOpened { window: Window::Service, until }
        };
        events.push(event_of(&record, now, Actor::Customer, body));
    }
    if let Some(routing) = routed {
        // The route of the first offer: the owner's when there is one.
        let route = routing.agent.as_ref().map_or(&routing.route, |choice| &choice.route);
        events.push(routed_event(&record, now, Actor::System, route));
        // A city named in the text (`city_in_text`) becomes the contact's.
        if let Some(city) = &routing.contact_city {
            let wa_id = &record.conversation.contact.wa_id;
            let patch = crate::contacts::ContactPatch { city: Some(Some(city.clone())), ..Default::default() };
            // Only `attributes` can refuse a patch; a city never does.
            if let Ok((after, changes)) = crate::contacts::apply_patch(contact_record, wa_id, &patch, now)
                && !changes.is_empty()
            {
                decision.writes.push(Op::PutContact(Box::new(after)));
                let conversation = (record.conversation.id.as_str(), record.conversation.phone_number_id.as_str());
                let event = crate::contacts::contact_event(wa_id, Some(conversation), now, Actor::System, changes);
                decision.events.push(event);
            }
        }
        if copilot_start.is_none() {
            decision.effects.push(Effect::Route(Box::new(routing)));
            // Opened outside its team's hours: the customer hears so, once.
            if let Some(template) = team_policy.closed_template.as_ref().filter(|_| !team_policy.schedule.is_open(now))
            {
                decision.effects.push(Effect::SendTemplate(template.clone()));
            }
        }
    }
    if let Some((spec, flow)) = copilot_start {
        // The co-pilot takes it: greeting and first question.
        let team = record.conversation.team.clone().unwrap_or_default();
        record.conversation.status = ConversationStatus::Bot;
        record.queued_at = None;
        let (opens_at, label) = opening_of(policy, &record, now);
        let context = copilot_context(policy, &record, now, opens_at, label.as_deref());
        let started = copilot::start(flow, &team, &context);
        decision.events.push(event_of(
            &record,
            now,
            Actor::Copilot,
            EventBody::CopilotStarted { flow: flow.id.clone(), team_id: team },
        ));
        apply_copilot_step(
            &mut decision,
            &mut record,
            &mut thread,
            current.thread_key,
            (spec, flow),
            started,
            now,
            policy,
        );
    } else if record.conversation.status == ConversationStatus::Bot
        && let Some((spec, flow)) = running_flow_of(policy, &record)
    {
        // An answer still pending from before a restart is taken first,
        // with the built-in reading.
        let earlier = record.copilot.as_mut().and_then(|state| state.pending.take());
        if let Some(earlier) = earlier {
            let step = pending_step(policy, &record, (spec, flow), &earlier, None, 0, now);
            let key = current.thread_key;
            apply_copilot_step(&mut decision, &mut record, &mut thread, key, (spec, flow), step, now, policy);
        }
        if record.conversation.status == ConversationStatus::Bot {
            let answer = storage::PendingAnswer {
                message_id: message.id.clone(),
                text: shown.text.clone(),
                reply_id: interactive_id(&message).map(str::to_owned),
            };
            let step = pending_step(policy, &record, (spec, flow), &answer, None, 0, now);
            let state = record.copilot.as_ref().filter(|_| !step.ignored);
            match copilot_model_wait_ms.filter(|_| state.is_some_and(|state| wants_model(flow, state, &answer, &step)))
            {
                Some(wait_ms) => {
                    // Committed now, stepped once the hook answers (or at
                    // the guard, after a restart).
                    let guard = now + wait_ms;
                    let state = record.copilot.get_or_insert_with(Default::default);
                    state.pending = Some(answer);
                    record.clocks.copilot_at = Some(record.clocks.copilot_at.map_or(guard, |at| at.min(guard)));
                    put_record(&mut decision, &record);
                }
                None => {
                    let key = current.thread_key;
                    apply_copilot_step(&mut decision, &mut record, &mut thread, key, (spec, flow), step, now, policy);
                }
            }
        }
    } else if record.conversation.status == ConversationStatus::Bot {
        // Its flow is no longer configured: people take it.
        let (spec, flow) = (CopilotSpec::default(), FlowSpec::default());
        let step = gone_step(&record);
        apply_copilot_step(
            &mut decision,
            &mut record,
            &mut thread,
            current.thread_key,
            (&spec, &flow),
            step,
            now,
            policy,
        );
    }
    decision.thread = Some(thread);
    decision.record = Some(record);
    decision
}

/// The co-pilot's step for `answer` (the customer's message) on `record`'s
/// state, with the model hook's checked reading if any and the tokens its
/// calls used.
fn pending_step(
    policy: Policy<'_>,
    record: &ConversationRecord,
    (spec, flow): (&CopilotSpec, &FlowSpec),
    answer: &storage::PendingAnswer,
    reading: Option<&copilot::ModelInput>,
    tokens: u64,
    now: UnixMs,
) -> copilot::Step {
    let (opens_at, label) = opening_of(policy, record, now);
    let context = copilot_context(policy, record, now, opens_at, label.as_deref());
    let mut state = record.copilot.clone().unwrap_or_default();
    state.pending = None;
    state.tokens += tokens;
    let input =
        copilot::Input::Message { text: answer.text.as_deref(), reply_id: answer.reply_id.as_deref(), model: reading };
    copilot::step(spec, flow, &state, input, &context)
}

/// Whether the model hook has something to do for `answer` (`step` being
/// the built-in step for it): read a text the built-in rules do not
/// understand, or write the summary of the hand-over it makes.
pub fn wants_model(
    flow: &FlowSpec,
    state: &storage::CopilotState,
    answer: &storage::PendingAnswer,
    step: &copilot::Step,
) -> bool {
    let hands_over = matches!(step.end, Some(copilot::End::Handoff { .. }));
    hands_over || model_question(flow, state, answer).is_some()
}

/// The question the model hook is asked to read `answer` against: the
/// current one, when the answer has text the built-in rules find no answer
/// in.
pub fn model_question<'a>(
    flow: &'a FlowSpec,
    state: &storage::CopilotState,
    answer: &storage::PendingAnswer,
) -> Option<&'a copilot::QuestionSpec> {
    let question = flow.questions.get(state.question as usize)?;
    let text = answer.text.as_deref().map(str::trim).filter(|text| !text.is_empty())?;
    copilot::interpret(question, Some(text), answer.reply_id.as_deref()).is_none().then_some(question)
}

/// The pending answer's step ([`Input::CopilotReading`]; also at the
/// co-pilot's deadline with no reading, after a restart).
fn copilot_reading(
    current: Current<'_>,
    mut record: ConversationRecord,
    message_id: &str,
    reading: Option<copilot::ModelInput>,
    tokens: u64,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let pending = record.copilot.as_ref().and_then(|state| state.pending.clone());
    let Some(answer) = pending.filter(|answer| answer.message_id == message_id) else { return Decision::default() };
    let Some((spec, flow)) = running_flow_of(policy, &record) else {
        // Its flow is no longer configured: people take it.
        if let Some(state) = record.copilot.as_mut() {
            state.pending = None;
        }
        return copilot_gone(current, record, now, policy);
    };
    let step = pending_step(policy, &record, (spec, flow), &answer, reading.as_ref(), tokens, now);
    copilot_step_alone(current, record, (spec, flow), step, now, policy)
}

/// The co-pilot's `step` on `record` as a decision of its own (a reading,
/// its deadline); nothing when the step ignores what came.
fn copilot_step_alone(
    current: Current<'_>,
    mut record: ConversationRecord,
    (spec, flow): (&CopilotSpec, &FlowSpec),
    step: copilot::Step,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    if step.ignored {
        return Decision::default();
    }
    let Some(mut thread) = current.thread.cloned() else { return Decision::default() };
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    apply_copilot_step(&mut decision, &mut record, &mut thread, current.thread_key, (spec, flow), step, now, policy);
    if !decision.record_is_open {
        decision.thread = Some(thread);
    }
    decision.record = Some(record);
    decision
}

/// The co-pilot of `record`'s team and the flow a new conversation from
/// its source takes, if any.
fn copilot_flow_of<'a>(policy: Policy<'a>, record: &ConversationRecord) -> Option<(&'a CopilotSpec, &'a FlowSpec)> {
    let spec = copilot_spec_of(policy, record.conversation.team.as_deref())?;
    Some((spec, copilot::select_flow(spec, &record.conversation.source)?))
}

/// The team's `[teams.copilot]`.
pub fn copilot_spec_of<'a>(policy: Policy<'a>, team: Option<&str>) -> Option<&'a CopilotSpec> {
    let team = team?;
    policy.schemas.teams.iter().find(|spec| spec.id == team)?.copilot.as_deref()
}

/// The flow the co-pilot runs on `record` (by its state's team and flow),
/// while it has not ended. `None` too when the configuration no longer has
/// it (the conversation then waits for a person: see `deadline`).
pub fn running_flow_of<'a>(policy: Policy<'a>, record: &ConversationRecord) -> Option<(&'a CopilotSpec, &'a FlowSpec)> {
    let state = record.copilot.as_ref().filter(|state| state.ended.is_none())?;
    let spec = copilot_spec_of(policy, Some(&state.team))?;
    Some((spec, spec.flows.iter().find(|flow| flow.id == state.flow)?))
}

/// When `record`'s team opens next while it is closed, and that time as
/// its customers read it.
fn opening_of(policy: Policy<'_>, record: &ConversationRecord, now: UnixMs) -> (Option<UnixMs>, Option<String>) {
    let schedule = &policy.policies.of(record.conversation.team.as_deref()).schedule;
    let opens_at = schedule.next_opening(now);
    (opens_at, opens_at.map(|at| schedule.local_label(at)))
}

fn copilot_context<'a>(
    policy: Policy<'a>,
    record: &'a ConversationRecord,
    now: UnixMs,
    opens_at: Option<UnixMs>,
    opens_label: Option<&'a str>,
) -> copilot::Context<'a> {
    copilot::Context {
        now,
        opens_at,
        opens_label,
        source: &record.conversation.source,
        free_entry_open: record.conversation.free_entry_until.is_some_and(|until| now < until),
        schema: policy.schemas.of(record.conversation.team.as_deref()),
    }
}

/// Replaces the decision's write of `record` (or adds one).
fn put_record(decision: &mut Decision, record: &ConversationRecord) {
    let put = Op::PutConversation(Box::new(record.clone()));
    match decision
        .writes
        .iter_mut()
        .find(|op| matches!(op, Op::PutConversation(existing) if existing.conversation.id == record.conversation.id))
    {
        Some(existing) => *existing = put,
        None => decision.writes.push(put),
    }
}

/// Takes a step of the co-pilot's machine into the decision: the state and
/// deadline on the record, the answers and fields with their events, what
/// it says (after the commit), and how it ends: handed over (status
/// `queued`, routed again in its team with the route it opened with, the
/// hand-over kept for the `assigned` frame) or closed as not qualified.
#[allow(clippy::too_many_arguments)]
fn apply_copilot_step(
    decision: &mut Decision,
    record: &mut ConversationRecord,
    thread: &mut ThreadRecord,
    thread_key: &str,
    (_spec, flow): (&CopilotSpec, &FlowSpec),
    step: copilot::Step,
    now: UnixMs,
    policy: Policy<'_>,
) {
    let copilot::Step { state, say, answered, fields, qualified, end, deadline, ignored } = step;
    if ignored {
        return;
    }
    let score = state.score;
    record.copilot = Some(state);
    record.clocks.copilot_at = deadline;
    for answer in answered {
        let body = EventBody::CopilotAnswered {
            question: answer.question,
            field: answer.field,
            value: answer.value,
            score: answer.score,
        };
        decision.events.push(event_of(record, now, Actor::Copilot, body));
    }
    if !fields.is_empty() {
        let before = record.conversation.fields.clone();
        record.conversation.fields.extend(fields);
        let changes = field_changes(&before, &record.conversation.fields);
        if !changes.is_empty() {
            decision.events.push(event_of(record, now, Actor::Copilot, EventBody::FieldsChanged { changes }));
        }
    }
    if let Some(score) = qualified {
        decision.events.push(event_of(record, now, Actor::Copilot, EventBody::CopilotQualified { score }));
    }
    let mut route = None;
    let mut closed_template = None;
    match end {
        None => {}
        Some(copilot::End::Handoff { reason, summary, qualified }) => {
            let answers = record.copilot.as_ref().map(|state| state.answers.clone()).unwrap_or_default();
            let mut filled = Map::new();
            for (question_id, value) in answers {
                if let Some(question) = flow.questions.iter().find(|question| question.id == question_id) {
                    filled.insert(question.field.clone(), value);
                }
            }
            record.handoff = Some(protocol::ws::Handoff {
                summary: summary.clone(),
                fields: filled.clone(),
                reason: reason.clone(),
            });
            record.conversation.status = ConversationStatus::Queued;
            record.queued_at = Some(now);
            record.clocks.copilot_at = None;
            let team_policy = policy.policies.of(record.conversation.team.as_deref());
            record.clocks.frt =
                Some(deadlines::sla_clock(now, team_policy.sla.first_response_s, &team_policy.schedule));
            let trigger = Trigger::Restart {
                team: record.conversation.team.clone(),
                route: record.route.clone().unwrap_or_default(),
            };
            let routing = route_again(record, trigger, policy);
            decision.events.push(event_of(
                record,
                now,
                Actor::Copilot,
                EventBody::CopilotHandoff { reason, summary, fields: filled, score, qualified },
            ));
            decision.events.push(routed_event(record, now, Actor::Copilot, &routing.route));
            route = Some(routing);
            // Handed over while the team is closed (`office_hours = "queue"`):
            // its closed-hours template, as a conversation opened then gets.
            if let Some(template) = team_policy.closed_template.as_ref().filter(|_| !team_policy.schedule.is_open(now))
            {
                closed_template = Some(template.clone());
            }
        }
        Some(copilot::End::Close { reason, fields }) => {
            let before = record.conversation.fields.clone();
            record.conversation.fields.extend(fields);
            let changes = field_changes(&before, &record.conversation.fields);
            if !changes.is_empty() {
                decision.events.push(event_of(record, now, Actor::Copilot, EventBody::FieldsChanged { changes }));
            }
            record.conversation.status = ConversationStatus::Closed;
            record.conversation.closed_at = Some(now);
            record.queued_at = None;
            for clock in [&mut record.clocks.frt, &mut record.clocks.nrt, &mut record.clocks.trt] {
                deadlines::stop_clock(clock, now);
            }
            record.clocks.reassign_at = None;
            record.clocks.copilot_at = None;
            thread.open_conversation = None;
            decision.record_is_open = false;
            decision.events.push(event_of(record, now, Actor::Copilot, EventBody::CopilotClosed { reason }));
            let outcome = record.conversation.fields.get("outcome").and_then(Value::as_str).map(str::to_owned);
            decision.events.push(event_of(
                record,
                now,
                Actor::Copilot,
                EventBody::Closed { fields: record.conversation.fields.clone(), outcome },
            ));
            let put = Op::PutThread { key: thread_key.to_owned(), record: thread.clone() };
            match decision.writes.iter_mut().find(|op| matches!(op, Op::PutThread { .. })) {
                Some(existing) => *existing = put,
                None => decision.writes.push(put),
            }
        }
    }
    put_record(decision, record);
    if !say.is_empty() {
        decision.effects.push(Effect::CopilotSay { record: Box::new(record.clone()), say });
    }
    if let Some(routing) = route {
        decision.effects.push(Effect::Route(Box::new(routing)));
    }
    if let Some(template) = closed_template {
        decision.effects.push(Effect::SendTemplate(template));
    }
}

/// A user takes a conversation from the co-pilot (a transfer): its part
/// ends (its deadline with it) and the first-response clock, which starts
/// at a hand-over, starts now.
fn leave_copilot(record: &mut ConversationRecord, now: UnixMs, policy: Policy<'_>) {
    if record.conversation.status != ConversationStatus::Bot {
        return;
    }
    if let Some(state) = record.copilot.as_mut() {
        state.ended = Some("transferred".into());
    }
    record.clocks.copilot_at = None;
    if record.clocks.frt.is_none() {
        let team_policy = policy.policies.of(record.conversation.team.as_deref());
        record.clocks.frt = Some(deadlines::sla_clock(now, team_policy.sla.first_response_s, &team_policy.schedule));
    }
}

/// The id of a button or list reply (or a template's quick-reply payload).
fn interactive_id(message: &protocol::webhook::InboundMessage) -> Option<&str> {
    let reply = message
        .interactive
        .as_ref()
        .and_then(|interactive| interactive.button_reply.as_ref().or(interactive.list_reply.as_ref()));
    reply
        .and_then(|reply| reply.id.as_deref())
        .or_else(|| message.button.as_ref().and_then(|button| button.payload.as_deref()))
}

fn status_in(
    current: Current<'_>,
    inbox_seq: u64,
    conversation_id: String,
    status: Status,
    stored: Option<(u32, StoredMessage)>,
    now: UnixMs,
) -> Decision {
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.writes.push(Op::DeleteInbox(inbox_seq));
    let mut thread = current.thread.cloned();
    if let Some(thread) = thread.as_mut() {
        thread.last_inbox_seq = inbox_seq;
        decision.writes.push(Op::PutThread { key: current.thread_key.to_owned(), record: thread.clone() });
    }
    decision.thread = thread;
    let new_status = DeliveryStatus::parse(&status.status);
    let (Some(new_status), Some((index, mut stored))) = (new_status, stored) else { return decision };
    if !status_advances(stored.message.status, new_status) {
        return decision;
    }
    // A send whose outcome was unknown, matched with this wamid by the
    // store: the wamid becomes its id.
    stored.message.id = status.id.clone();
    stored.message.status = Some(new_status);
    let first_error = status.errors.first();
    let error = (new_status == DeliveryStatus::Failed).then(|| {
        protocol::rules::meta_error(
            first_error.map_or(0, |error| error.code),
            first_error.and_then(|error| error.message.as_deref().or(error.title.as_deref())),
        )
    });
    stored.message.error = error.clone();
    decision.writes.push(Op::PutMessage {
        conversation_id: conversation_id.clone(),
        thread_key: current.thread_key.to_owned(),
        index,
        message: Box::new(stored),
    });
    let open = current.open.filter(|open| open.conversation.id == conversation_id);
    if let Some(agent) = open.and_then(|open| open.conversation.agent.clone()) {
        decision.writes.push(Op::AgentEvent {
            agent_id: agent,
            frame: Box::new(ServerFrame::Status {
                seq: 0,
                conversation_id: conversation_id.clone(),
                message_id: status.id.clone(),
                status: new_status,
                error,
            }),
        });
    }
    let thread = decision.thread.as_ref();
    decision.events.push(Event {
        at: now,
        conversation_id: Some(conversation_id),
        contact: thread.map(|thread| thread.contact.wa_id.clone()),
        phone_number_id: thread.map(|thread| thread.phone_number_id.clone()),
        actor: Actor::Meta,
        body: EventBody::Status {
            wamid: status.id,
            status: status.status,
            error_code: first_error.filter(|_| new_status == DeliveryStatus::Failed).map(|error| error.code),
        },
    });
    decision
}

fn send_accepted(
    current: Current<'_>,
    mut record: ConversationRecord,
    intent: SendIntent,
    wamid: String,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let is_open = current.open.is_some_and(|open| open.conversation.id == record.conversation.id);
    let opened_free_entry = deadlines::free_entry_until(&record, now);
    if let Some(until) = opened_free_entry {
        record.conversation.free_entry_until = Some(until);
    }
    if record.clocks.first_outbound_at.is_none() {
        record.clocks.first_outbound_at = Some(now);
    }
    // The co-pilot's messages are not a person's reply: the response
    // clocks go on (the first-response clock starts at its hand-over).
    if is_open && intent.sent_by != COPILOT_SENDER {
        // A reply from the business: response clocks stop, idle reassignment is off.
        record.clocks.last_agent_reply_at = Some(now);
        deadlines::stop_clock(&mut record.clocks.frt, now);
        if let Some(started) = record.clocks.nrt.as_ref().map(|clock| clock.started_at)
            && deadlines::stop_clock(&mut record.clocks.nrt, now)
        {
            let team_policy = policy.policies.of(record.conversation.team.as_deref());
            record.clocks.nrt_done_ms.push(team_policy.schedule.between(started, now));
        }
        record.clocks.reassign_at = None;
    }
    let free_entry = record.conversation.free_entry_until.is_some_and(|until| now < until);
    let free = match intent.kind.as_str() {
        "text" => true, // service messages inside the service window are free
        _ => free_entry,
    };
    let message = Message {
        id: wamid.clone(),
        direction: Direction::Out,
        kind: intent.kind.clone(),
        text: intent.text.clone(),
        media: outbound_media(&intent),
        at: now,
        status: None,
        free: Some(free),
        error: None,
        author: Some(author_of(&intent.sent_by)),
    };
    let index = record.message_count;
    record.message_count += 1;
    if record.conversation.status == ConversationStatus::Assigned && record.first_response_at.is_none() {
        record.first_response_at = Some(now);
    }
    let mut decision = Decision { record_is_open: is_open, ..Decision::default() };
    decision.writes = vec![
        Op::PutMessage {
            conversation_id: record.conversation.id.clone(),
            thread_key: current.thread_key.to_owned(),
            index,
            message: Box::new(StoredMessage { message: message.clone(), raw: None }),
        },
        Op::PutConversation(Box::new(record.clone())),
        Op::ResolveSendIntent {
            thread_key: current.thread_key.to_owned(),
            local_id: intent.local_id.clone(),
            wamid: Some(wamid.clone()),
        },
    ];
    if let (true, Some(agent)) = (is_open, &record.conversation.agent) {
        decision.writes.push(Op::AgentEvent {
            agent_id: agent.clone(),
            frame: Box::new(ServerFrame::Message {
                seq: 0,
                conversation_id: record.conversation.id.clone(),
                message: message.clone(),
            }),
        });
        if opened_free_entry.is_some() {
            decision.writes.push(Op::AgentEvent { agent_id: agent.clone(), frame: Box::new(window_frame(&record)) });
        }
    }
    let sender = sender_actor(&intent.sent_by);
    decision.events.push(event_of(&record, now, sender.clone(), message_out_body(&message, &intent)));
    if let Some(until) = opened_free_entry {
        decision.events.push(event_of(
            &record,
            now,
            sender,
            EventBody::WindowOpened { window: Window::FreeEntry, until },
        ));
    }
    decision.answer = Some(object(json!({ "message": message })));
    decision.record = Some(record);
    decision
}

/// What an outbound message shows beside its text: a template's name,
/// language and params, or an interactive message's buttons or list.
pub fn outbound_media(intent: &SendIntent) -> Option<Value> {
    if let Some(template) = &intent.template {
        return Some(json!({"template": template}));
    }
    if intent.kind == "interactive" {
        let request: protocol::graph::SendMessageRequest = serde_json::from_str(&intent.request).ok()?;
        return Some(json!({"interactive": request.interactive?}));
    }
    None
}

fn message_out_body(message: &Message, intent: &SendIntent) -> EventBody {
    EventBody::MessageOut {
        id: message.id.clone(),
        message_type: message.kind.clone(),
        text: message.text.clone(),
        template: intent.template.as_ref().and_then(|template| template["name"].as_str()).map(str::to_owned),
    }
}

/// Gives the open conversation to `agent_id` (its slot reserved): the
/// record, the `assigned` frame with the messages so far, idle
/// reassignment armed while no first response was made.
fn take_assignment(
    record: &mut ConversationRecord,
    agent_id: &str,
    messages: Vec<Message>,
    route: Route,
    now: UnixMs,
    policy: Policy<'_>,
) -> Op {
    record.route = Some(route.clone());
    record.conversation.status = ConversationStatus::Assigned;
    record.conversation.agent = Some(agent_id.to_owned());
    record.assigned_at = Some(now);
    record.queued_at = None;
    let team_policy = policy.policies.of(record.conversation.team.as_deref());
    record.clocks.reassign_at = (team_policy.sla.reassign_after_s > 0 && record.first_response_at.is_none())
        .then(|| team_policy.schedule.add(now, team_policy.sla.reassign_after_s as i64 * 1000));
    let mut conversation = record.conversation.clone();
    conversation.messages = Some(messages);
    Op::AgentEvent {
        agent_id: agent_id.to_owned(),
        frame: Box::new(ServerFrame::Assigned {
            seq: 0,
            conversation: Box::new(conversation),
            route,
            handoff: record.handoff.clone(),
        }),
    }
}

/// The `assigned` event of `record` to `agent_id`, with its route.
fn assigned_event(record: &ConversationRecord, agent_id: &str, by: Actor, now: UnixMs) -> Event {
    let body = EventBody::Assigned {
        agent_id: agent_id.to_owned(),
        team_id: record.conversation.team.clone(),
        route: record.route.clone(),
    };
    event_of(record, now, by, body)
}

fn assign(
    current: Current<'_>,
    conversation_id: String,
    agent_id: String,
    messages: Vec<Message>,
    route: Route,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let assignable = current.open.filter(|open| {
        open.conversation.id == conversation_id && open.conversation.status == ConversationStatus::Queued
    });
    let Some(open) = assignable else {
        // Closed, moved or assigned meanwhile: the slot goes back.
        let effects = vec![Effect::CancelReservation { agent_id, conversation_id }];
        return Decision { effects, ..Decision::default() };
    };
    let mut record = open.clone();
    let frame = take_assignment(&mut record, &agent_id, messages, route, now, policy);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.writes = vec![Op::PutConversation(Box::new(record.clone())), frame];
    decision.events.push(assigned_event(&record, &agent_id, Actor::System, now));
    decision.effects.push(Effect::ConfirmReservation { agent_id, conversation_id });
    decision.record = Some(record);
    decision
}

fn unassign(
    current: Current<'_>,
    conversation_id: String,
    agent_id: String,
    reason: UnassignReason,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let held = current.open.filter(|open| {
        open.conversation.id == conversation_id && open.conversation.agent.as_deref() == Some(agent_id.as_str())
    });
    let Some(open) = held else { return Decision::default() };
    let mut record = open.clone();
    record.conversation.status = ConversationStatus::Queued;
    record.conversation.agent = None;
    record.queued_at = Some(now);
    record.clocks.reassign_at = None;
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    let trigger = Trigger::Offline { team: record.conversation.team.clone(), from_agent: agent_id.clone() };
    let routing = route_again(&mut record, trigger, policy);
    let (write, event) = unassigned(&record, &agent_id, reason, Actor::System, now);
    decision.writes = vec![Op::PutConversation(Box::new(record.clone())), write];
    decision.events.push(event);
    decision.events.push(routed_event(&record, now, Actor::System, &routing.route));
    decision.effects.push(Effect::Route(Box::new(routing)));
    decision.record = Some(record);
    decision
}

/// What every transfer does to the agent who held the conversation: the
/// `unassigned transferred` frame and event, and its slot freed after the commit.
fn let_go_of_holder(
    decision: &mut Decision,
    record: &ConversationRecord,
    previous: Option<&String>,
    by: &Actor,
    now: UnixMs,
) {
    let Some(previous) = previous else { return };
    let (write, event) = unassigned(record, previous, UnassignReason::Transferred, by.clone(), now);
    decision.writes.insert(0, write);
    decision.events.push(event);
}

fn transfer_to_agent(
    current: Current<'_>,
    (by, note): (String, Option<String>),
    target: String,
    messages: Vec<Message>,
    now: UnixMs,
    policy: Policy<'_>,
) -> Result<Decision, ApiError> {
    let mut record = the_open_record(current)?;
    let previous = record.conversation.agent.clone();
    let conversation_id = record.conversation.id.clone();
    if previous.as_deref() == Some(target.as_str()) {
        return Err(ApiError::bad_request(format!("conversation {conversation_id} is already with {target}")));
    }
    let was_queued = record.conversation.status == ConversationStatus::Queued;
    leave_copilot(&mut record, now, policy);
    let frame = take_assignment(
        &mut record,
        &target,
        messages,
        Route::because(protocol::model::RouteReason::Transfer),
        now,
        policy,
    );
    let transferrer = Actor::user(by);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.writes = vec![Op::PutConversation(Box::new(record.clone())), frame];
    decision.events.push(event_of(
        &record,
        now,
        transferrer.clone(),
        EventBody::Transferred { from_agent: previous.clone(), to_team: None, to_agent: Some(target.clone()), note },
    ));
    let_go_of_holder(&mut decision, &record, previous.as_ref(), &transferrer, now);
    decision.events.push(assigned_event(&record, &target, transferrer, now));
    decision.effects.push(Effect::ConfirmReservation { agent_id: target, conversation_id: conversation_id.clone() });
    if let Some(previous) = previous {
        decision.effects.push(Effect::ReleaseAgent { agent_id: previous, conversation_id: conversation_id.clone() });
    }
    if let (true, Some(team)) = (was_queued, record.conversation.team.clone()) {
        decision.effects.push(Effect::LeaveTeamQueue { team_id: team, conversation_id });
    }
    decision.answer = Some(object(json!({ "conversation": record.conversation })));
    decision.record = Some(record);
    Ok(decision)
}

fn transfer_to_team(
    current: Current<'_>,
    (by, note): (String, Option<String>),
    team: String,
    now: UnixMs,
    policy: Policy<'_>,
) -> Result<Decision, ApiError> {
    let mut record = the_open_record(current)?;
    let previous = record.conversation.agent.clone();
    let previous_team = record.conversation.team.clone();
    let conversation_id = record.conversation.id.clone();
    let was_queued = record.conversation.status == ConversationStatus::Queued;
    leave_copilot(&mut record, now, policy);
    record.conversation.status = ConversationStatus::Queued;
    record.conversation.agent = None;
    let mut routing =
        route_again(&mut record, Trigger::Transfer { to_team: Some(team.clone()), to_agent: None }, policy);
    // Where it came from, when that is another team ("transferred from support").
    if previous_team.is_some() && previous_team != record.conversation.team {
        routing.route.from_team = previous_team.clone();
        record.route = Some(routing.route.clone());
    }
    record.queued_at = Some(now);
    record.clocks.reassign_at = None;
    let transferrer = Actor::user(by);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.writes = vec![Op::PutConversation(Box::new(record.clone()))];
    decision.events.push(event_of(
        &record,
        now,
        transferrer.clone(),
        EventBody::Transferred { from_agent: previous.clone(), to_team: Some(team), to_agent: None, note },
    ));
    let_go_of_holder(&mut decision, &record, previous.as_ref(), &transferrer, now);
    decision.events.push(routed_event(&record, now, transferrer, &routing.route));
    decision.effects.push(Effect::Route(Box::new(routing)));
    if let Some(previous) = previous {
        decision.effects.push(Effect::ReleaseAgent { agent_id: previous, conversation_id: conversation_id.clone() });
    }
    if let (true, Some(old_team)) = (was_queued, previous_team) {
        decision.effects.push(Effect::LeaveTeamQueue { team_id: old_team, conversation_id });
    }
    decision.answer = Some(object(json!({ "conversation": record.conversation })));
    decision.record = Some(record);
    Ok(decision)
}

/// A waiting conversation moves to a partner team. It keeps its age
/// (`queued_at`), so it is served there in its turn. One no longer waiting
/// in `from_team` only leaves that queue (its entry there was stale).
fn overflow(
    current: Current<'_>,
    conversation_id: String,
    from_team: String,
    to_team: String,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let leave = Effect::LeaveTeamQueue { team_id: from_team.clone(), conversation_id: conversation_id.clone() };
    let waiting = current.open.filter(|open| {
        open.conversation.id == conversation_id
            && open.conversation.status == ConversationStatus::Queued
            && open.conversation.team.as_deref() == Some(from_team.as_str())
    });
    let Some(open) = waiting else {
        return Decision { effects: vec![leave], ..Decision::default() };
    };
    let mut record = open.clone();
    let routing = route_again(&mut record, Trigger::Overflow { from_team, to_team }, policy);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.writes.push(Op::PutConversation(Box::new(record.clone())));
    decision.events.push(routed_event(&record, now, Actor::System, &routing.route));
    decision.effects = vec![leave, Effect::Route(Box::new(routing))];
    decision.record = Some(record);
    decision
}

fn deadline(
    current: Current<'_>,
    conversation_id: String,
    kind: DeadlineKind,
    due: UnixMs,
    now: UnixMs,
    policy: Policy<'_>,
) -> Decision {
    let Some(open) = current.open.filter(|open| open.conversation.id == conversation_id) else {
        return Decision::default();
    };
    let mut record = open.clone();
    let holder =
        record.conversation.agent.clone().filter(|_| record.conversation.status == ConversationStatus::Assigned);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    match deadlines::on_fired(&mut record, kind, due, now) {
        Fired::Nothing => return Decision::default(),
        Fired::WindowClosed => {
            let window = if kind == DeadlineKind::FreeEntryClose { Window::FreeEntry } else { Window::Service };
            if let Some(agent) = holder {
                decision.writes.push(Op::AgentEvent { agent_id: agent, frame: Box::new(window_frame(&record)) });
            }
            decision.events.push(event_of(&record, now, Actor::System, EventBody::WindowClosed { window }));
            // The record itself does not change: its windows are times.
            return decision;
        }
        Fired::Sla(sla_kind, sla_state) => {
            // The holder's first-response breach: kept on the record for the
            // open index (a start's fallback for the agent's daily count);
            // the agent actor counts it from the `sla` frame and stores the
            // count. Warnings and breaches themselves are in the event log.
            if let (Some(agent), SlaKind::FirstResponse, SlaState::Breached) = (&holder, sla_kind, sla_state) {
                record.clocks.frt_breaches.push((agent.clone(), now));
            }
            decision.writes.push(Op::PutConversation(Box::new(record.clone())));
            if let Some(agent) = holder {
                decision.writes.push(Op::AgentEvent {
                    agent_id: agent,
                    frame: Box::new(ServerFrame::Sla { seq: 0, conversation_id, kind: sla_kind, state: sla_state }),
                });
            }
            let body = match sla_state {
                SlaState::Warning => EventBody::SlaWarning { clock: sla_kind, due },
                SlaState::Breached => EventBody::SlaBreach { clock: sla_kind, due },
            };
            decision.events.push(event_of(&record, now, Actor::System, body));
        }
        Fired::Copilot => {
            let pending = record.copilot.as_ref().and_then(|state| state.pending.as_ref());
            if let Some(message_id) = pending.map(|answer| answer.message_id.clone()) {
                // A restart came between a message and its step: the
                // built-in reading.
                return copilot_reading(current, record, &message_id, None, 0, now, policy);
            }
            let Some((spec, flow)) = running_flow_of(policy, &record) else {
                // Its flow is no longer configured: people take it.
                return copilot_gone(current, record, now, policy);
            };
            let (opens_at, label) = opening_of(policy, &record, now);
            let context = copilot_context(policy, &record, now, opens_at, label.as_deref());
            let state = record.copilot.clone().unwrap_or_default();
            let step = copilot::step(spec, flow, &state, copilot::Input::Deadline, &context);
            return copilot_step_alone(current, record, (spec, flow), step, now, policy);
        }
        Fired::Reassign => {
            let Some(previous) = holder else { return Decision::default() };
            record.conversation.status = ConversationStatus::Queued;
            record.conversation.agent = None;
            record.queued_at = Some(now);
            let trigger = Trigger::Idle { team: record.conversation.team.clone(), from_agent: previous.clone() };
            let routing = route_again(&mut record, trigger, policy);
            let (write, event) = unassigned(&record, &previous, UnassignReason::ReassignedIdle, Actor::System, now);
            decision.writes = vec![Op::PutConversation(Box::new(record.clone())), write];
            decision.events.push(event);
            decision.events.push(routed_event(&record, now, Actor::System, &routing.route));
            decision.effects =
                vec![Effect::ReleaseAgent { agent_id: previous, conversation_id }, Effect::Route(Box::new(routing))];
        }
    }
    decision.record = Some(record);
    decision
}

/// A conversation with the co-pilot whose flow is no longer configured
/// (the configuration changed across a restart): handed to its team's
/// queue at its deadline, reason `completed`, with what it had.
fn copilot_gone(current: Current<'_>, mut record: ConversationRecord, now: UnixMs, policy: Policy<'_>) -> Decision {
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    let Some(mut thread) = current.thread.cloned() else { return Decision::default() };
    let (spec, flow) = (CopilotSpec::default(), FlowSpec::default());
    let step = gone_step(&record);
    apply_copilot_step(&mut decision, &mut record, &mut thread, current.thread_key, (&spec, &flow), step, now, policy);
    decision.record = Some(record);
    decision
}

/// The step that hands a conversation over when its flow is gone.
fn gone_step(record: &ConversationRecord) -> copilot::Step {
    let state = record.copilot.clone().unwrap_or_default();
    let mut ended = state.clone();
    ended.ended = Some("handoff".into());
    copilot::Step {
        state: ended,
        end: Some(copilot::End::Handoff {
            reason: "completed".into(),
            summary: "The co-pilot's flow is no longer configured.".into(),
            qualified: state.qualified,
        }),
        ..copilot::Step::default()
    }
}

/// The co-pilot's hand-over in `decision`, if it makes one: what a model
/// hook's summary is asked from (the built-in summary, the fields, why).
pub fn handoff_of(decision: &Decision) -> Option<&protocol::ws::Handoff> {
    let record = decision.record.as_ref()?;
    let handed_over = decision.events.iter().any(|event| matches!(event.body, EventBody::CopilotHandoff { .. }));
    record.handoff.as_ref().filter(|_| handed_over)
}

/// Replaces the summary of the hand-over `decision` makes (the model
/// hook's, checked by the caller: not empty, not too long) in its record,
/// the record's write and its `copilot_handoff` event.
pub fn replace_handoff_summary(decision: &mut Decision, summary: String) {
    let Some(record) = decision.record.as_mut() else { return };
    let Some(handoff) = record.handoff.as_mut() else { return };
    handoff.summary = summary.clone();
    let record = record.clone();
    for event in &mut decision.events {
        if let EventBody::CopilotHandoff { summary: logged, .. } = &mut event.body {
            *logged = summary.clone();
        }
    }
    put_record(decision, &record);
}

/// Counts `tokens` a model hook's call used for the co-pilot of
/// `decision`'s conversation against its budget (`CopilotState::tokens`).
pub fn add_copilot_tokens(decision: &mut Decision, tokens: u64) {
    if tokens == 0 {
        return;
    }
    let Some(record) = decision.record.as_mut() else { return };
    let Some(state) = record.copilot.as_mut() else { return };
    state.tokens = state.tokens.saturating_add(tokens);
    let record = record.clone();
    put_record(decision, &record);
}

/// The `fields_changed` changes from `before` to `after`, key by key in
/// `after`'s order (fields are only ever set, never removed).
pub fn field_changes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<FieldChange> {
    after
        .iter()
        .filter(|(key, new)| before.get(*key) != Some(*new))
        .map(|(key, new)| FieldChange {
            key: key.clone(),
            old: before.get(key).cloned().unwrap_or(Value::Null),
            new: new.clone(),
        })
        .collect()
}

fn the_open_record(current: Current<'_>) -> Result<ConversationRecord, ApiError> {
    // The actor authorizes a request against its open conversation first.
    current
        .open
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::BadRequest, "no conversation is open with this customer"))
}

fn set_fields(
    current: Current<'_>,
    by: String,
    fields: Map<String, Value>,
    now: UnixMs,
    policy: Policy<'_>,
) -> Result<Decision, ApiError> {
    let mut record = the_open_record(current)?;
    rules::validate_fields(policy.schemas.of(record.conversation.team.as_deref()), &fields)?;
    let before = record.conversation.fields.clone();
    record.conversation.fields.extend(fields);
    let changes = field_changes(&before, &record.conversation.fields);
    let mut decision = Decision { record_is_open: true, ..Decision::default() };
    decision.answer = Some(object(json!({"fields": record.conversation.fields})));
    if changes.is_empty() {
        // Nothing changed: nothing to write and no event.
        decision.record = Some(record);
        return Ok(decision);
    }
    decision.writes.push(Op::PutConversation(Box::new(record.clone())));
    decision.events.push(event_of(&record, now, Actor::user(by), EventBody::FieldsChanged { changes }));
    decision.record = Some(record);
    Ok(decision)
}

fn close(
    current: Current<'_>,
    by: String,
    fields: Map<String, Value>,
    now: UnixMs,
    policy: Policy<'_>,
) -> Result<Decision, ApiError> {
    let mut record = the_open_record(current)?;
    // The schema of the team the conversation is in now: after a transfer,
    // the new team's (fields of the old schema stay as they were).
    let schema = policy.schemas.of(record.conversation.team.as_deref());
    rules::validate_fields(schema, &fields)?;
    let before = record.conversation.fields.clone();
    let mut merged = before.clone();
    merged.extend(fields);
    let missing = rules::missing_on_close(schema, &merged);
    if !missing.is_empty() {
        return Err(rules::disposition_required(missing));
    }
    let holder = record.conversation.agent.clone();
    let was_queued = record.conversation.status == ConversationStatus::Queued;
    let changes = field_changes(&before, &merged);
    record.conversation.fields = merged;
    record.conversation.status = ConversationStatus::Closed;
    record.conversation.closed_at = Some(now);
    for clock in [&mut record.clocks.frt, &mut record.clocks.nrt, &mut record.clocks.trt] {
        deadlines::stop_clock(clock, now);
    }
    record.clocks.reassign_at = None;
    let mut thread = current.thread.cloned().expect("an open conversation has a thread");
    thread.open_conversation = None;
    thread.last_closed_by = Some(holder.clone().unwrap_or(by.clone()));
    let conversation_id = record.conversation.id.clone();
    let mut decision = Decision { record_is_open: false, ..Decision::default() };
    decision.writes = vec![
        Op::PutConversation(Box::new(record.clone())),
        Op::PutThread { key: current.thread_key.to_owned(), record: thread.clone() },
    ];
    let closer = Actor::user(by);
    if !changes.is_empty() {
        decision.events.push(event_of(&record, now, closer.clone(), EventBody::FieldsChanged { changes }));
    }
    let outcome = record.conversation.fields.get("outcome").and_then(Value::as_str).map(str::to_owned);
    decision.events.push(event_of(
        &record,
        now,
        closer.clone(),
        EventBody::Closed { fields: record.conversation.fields.clone(), outcome },
    ));
    if let Some(agent) = &holder {
        let (write, event) = unassigned(&record, agent, UnassignReason::Closed, closer, now);
        decision.writes.push(write);
        decision.events.push(event);
        decision
            .effects
            .push(Effect::ReleaseAgent { agent_id: agent.clone(), conversation_id: conversation_id.clone() });
    }
    if let (true, Some(team)) = (was_queued, record.conversation.team.clone()) {
        decision.effects.push(Effect::LeaveTeamQueue { team_id: team, conversation_id });
    }
    decision.answer = Some(object(json!({ "conversation": record.conversation })));
    decision.thread = Some(thread);
    decision.record = Some(record);
    Ok(decision)
}

pub(crate) fn new_conversation(
    id: String,
    thread: &ThreadRecord,
    thread_key: &str,
    source: protocol::model::Source,
    team: Option<&str>,
    now: UnixMs,
) -> ConversationRecord {
    ConversationRecord {
        conversation: Conversation {
            id,
            contact: thread.contact.clone(),
            phone_number_id: thread.phone_number_id.clone(),
            status: ConversationStatus::Queued,
            team: team.map(str::to_owned),
            agent: None,
            source,
            service_until: None,
            free_entry_until: None,
            fields: Map::new(),
            opened_at: now,
            closed_at: None,
            messages: None,
        },
        thread_key: thread_key.to_owned(),
        message_count: 0,
        last_customer_at: None,
        queued_at: Some(now),
        assigned_at: None,
        first_response_at: None,
        clocks: Default::default(),
        route: None,
        copilot: None,
        handoff: None,
    }
}

/// The `window` event for a conversation's current windows.
pub(crate) fn window_frame(record: &ConversationRecord) -> ServerFrame {
    ServerFrame::Window {
        seq: 0,
        conversation_id: record.conversation.id.clone(),
        service_until: record.conversation.service_until,
        free_entry_until: record.conversation.free_entry_until,
    }
}

/// Delivery statuses only move forward (sent → delivered → read); `failed`
/// always lands.
pub(crate) fn status_advances(current: Option<DeliveryStatus>, new: DeliveryStatus) -> bool {
    match (current, new) {
        (_, DeliveryStatus::Failed) => current != Some(DeliveryStatus::Failed),
        (None, _) => true,
        (Some(DeliveryStatus::Failed), _) => false,
        (Some(current), new) => new > current,
    }
}

pub(crate) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{DispositionSpec, FieldKind, Settings};
    use protocol::model::{RouteReason, SourceKind};

    const THREAD_KEY: &str = "100:15550001";
    const HOUR: i64 = 3_600_000;
    /// 2026-11-30 00:00:00 UTC: a whole second, as Meta's timestamps are.
    const T0: UnixMs = 1_796_083_200_000;

    struct World {
        policies: Policies,
        routing: RoutingTable,
        dispositions: Vec<crate::settings::DispositionSpec>,
        teams: Vec<crate::settings::TeamSpec>,
        thread: Option<ThreadRecord>,
        open: Option<ConversationRecord>,
        contact: Option<ContactRecord>,
        contact_words: ContactWords,
    }

    impl World {
        fn new() -> World {
            let settings = Settings::default();
            let outcome = DispositionSpec {
                key: "outcome".into(),
                label: None,
                kind: FieldKind::Enum,
                options: vec!["won".into(), "lost".into()],
                required_on_close: true,
                won_values: vec!["won".into()],
                ..DispositionSpec::new("", FieldKind::Text)
            };
            let routed = Settings {
                teams: ["sales", "support"]
                    .into_iter()
                    .map(|id| crate::settings::TeamSpec { id: id.into(), ..Default::default() })
                    .collect(),
                // The agents these tests assign (routing offers only agents in the pool).
                agents: serde_json::from_value(json!([
                    {"id": "a1", "teams": ["sales"]},
                    {"id": "a2", "teams": ["sales"]},
                ]))
                .expect("agents"),
                ..Settings::default()
            };
            World {
                policies: Policies::from_settings(&settings).unwrap(),
                routing: routed.routing_table().unwrap(),
                dispositions: vec![outcome],
                teams: routed.teams.clone(),
                thread: None,
                open: None,
                contact: None,
                contact_words: ContactWords::default(),
            }
        }

        fn decide(&self, input: Input, now: UnixMs) -> Result<Decision, ApiError> {
            let current = Current { thread_key: THREAD_KEY, thread: self.thread.as_ref(), open: self.open.as_ref() };
            let policy = Policy {
                policies: &self.policies,
                schemas: Schemas { global: &self.dispositions, teams: &self.teams },
                routing: &self.routing,
                contact_words: &self.contact_words,
            };
            decide(current, input, now, policy)
        }

        /// Decides and takes the decision's records as the actor does after a commit.
        fn apply(&mut self, input: Input, now: UnixMs) -> Decision {
            let mut decision = self.decide(input, now).expect("accepted");
            if let Some(thread) = decision.thread.clone() {
                self.thread = Some(thread);
            }
            if let Some(record) = decision.record.clone() {
                self.open = decision.record_is_open.then_some(record);
            }
            let batch = decision.into_batch();
            for op in &batch {
                if let Op::PutContact(contact) = op {
                    self.contact = Some(contact.as_ref().clone());
                }
            }
            decision.writes = batch;
            decision
        }

        fn message_in(&mut self, wamid: &str, text: &str, at: UnixMs, referral: bool) -> Decision {
            self.message_in_with(wamid, text, at, referral, None)
        }

        /// [`Self::message_in`] with the co-pilot's model hook on when
        /// `copilot_model_wait_ms` is `Some`.
        fn message_in_with(
            &mut self,
            wamid: &str,
            text: &str,
            at: UnixMs,
            referral: bool,
            copilot_model_wait_ms: Option<i64>,
        ) -> Decision {
            let mut message = json!({
                "id": wamid, "from": "15550001", "timestamp": (at / 1000).to_string(),
                "type": "text", "text": {"body": text},
            });
            if referral {
                message["referral"] = json!({"source_type": "ad", "source_id": "ad1", "source_url": "https://x"});
            }
            let ingest = IngestMessage {
                phone_number_id: "100".into(),
                contact_key: "15550001".into(),
                contact: None,
                message: Box::new(serde_json::from_value(message).unwrap()),
            };
            let new_conversation_id = self.open.is_none().then(|| "cv000000000001".to_owned());
            // As the actor: the contact is read only for an opt word.
            let contact = opt_word_of(&ingest, &self.contact_words).and(self.contact.clone()).map(Box::new);
            self.apply(
                Input::MessageIn { ingest, inbox_seq: None, new_conversation_id, contact, copilot_model_wait_ms },
                at,
            )
        }

        fn assign(&mut self, agent: &str) {
            let open = self.open.as_mut().unwrap();
            open.conversation.status = ConversationStatus::Assigned;
            open.conversation.agent = Some(agent.into());
        }

        fn send_accepted(&mut self, wamid: &str, by: &str, kind: &str, at: UnixMs) -> Decision {
            let intent = SendIntent {
                local_id: format!("local.{wamid}"),
                conversation_id: "cv000000000001".into(),
                kind: kind.into(),
                text: (kind == "text").then(|| "hello".into()),
                template: (kind == "template").then(|| json!({"name": "welcome", "language": "en", "params": []})),
                request: String::new(),
                sent_by: by.into(),
                created_at: at - 100,
                unknown_at: None,
            };
            let record = self.open.clone().unwrap();
            self.apply(
                Input::SendAccepted { record: Box::new(record), intent: Box::new(intent), wamid: wamid.into() },
                at,
            )
        }
    }

    /// Where an `Effect::Route` sends the conversation: (team, agent first, excluded, route reason).
    fn routed(effect: &Effect) -> (Option<&str>, Option<&str>, Option<&str>, RouteReason) {
        let Effect::Route(routing) = effect else { panic!("not a route: {effect:?}") };
        let first = routing.agent.as_ref().map(|choice| choice.agent_id.as_str());
        (routing.team.as_deref(), first, routing.exclude_agent.as_deref(), routing.route.reason)
    }

    fn actions(decision: &Decision) -> Vec<&'static str> {
        decision
            .writes
            .iter()
            .filter_map(|op| match op {
                Op::Event(event) => Some(event.body.action()),
                _ => None,
            })
            .collect()
    }

    fn bodies(decision: &Decision) -> Vec<(Actor, EventBody)> {
        decision
            .writes
            .iter()
            .filter_map(|op| match op {
                Op::Event(event) => Some((event.actor.clone(), event.body.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_first_message_opens_routes_and_opens_the_service_window_in_its_own_batch() {
        let mut world = World::new();
        let decision = world.message_in("wamid.1", "hi", T0, false);
        assert!(decision.opened);
        assert_eq!(actions(&decision), ["opened", "message_in", "window_opened", "routed"]);
        assert!(
            matches!(decision.writes[0], Op::ClaimInbound(ref wamid) if wamid == "wamid.1"),
            "the claim comes first"
        );
        let bodies = bodies(&decision);
        assert_eq!(bodies[0], (Actor::Customer, EventBody::Opened { source: protocol::model::Source::organic() }));
        assert_eq!(
            bodies[1],
            (
                Actor::Customer,
                EventBody::MessageIn { wamid: "wamid.1".into(), message_type: "text".into(), text: Some("hi".into()) }
            )
        );
        assert_eq!(bodies[2].1, EventBody::WindowOpened { window: Window::Service, until: T0 + 24 * HOUR });
        assert_eq!(
            bodies[3],
            (Actor::System, EventBody::Routed { route: json!({"reason": "default"}), team_id: Some("sales".into()) })
        );
        assert_eq!(decision.effects.len(), 1);
        assert_eq!(routed(&decision.effects[0]), (Some("sales"), None, None, RouteReason::Default));
        let Some(Op::Event(event)) = decision.writes.last() else { panic!() };
        assert_eq!(event.conversation_id.as_deref(), Some("cv000000000001"));
        assert_eq!((event.contact.as_deref(), event.phone_number_id.as_deref()), (Some("15550001"), Some("100")));
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Queued);
        assert!(record.clocks.frt.is_some() && record.clocks.trt.is_some(), "first response and resolution clocks run");
    }

    #[test]
    fn a_returning_customer_is_routed_to_the_last_closer_first() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        world.apply(
            Input::Close { by: "a1".into(), fields: json!({"outcome": "won"}).as_object().cloned().unwrap() },
            T0 + HOUR,
        );
        assert_eq!(world.thread.as_ref().unwrap().last_closed_by.as_deref(), Some("a1"));
        let decision = world.message_in("wamid.2", "back again", T0 + 2 * HOUR, false);
        assert!(decision.opened);
        let (_, routed_body) = bodies(&decision).pop().unwrap();
        assert_eq!(
            routed_body,
            EventBody::Routed { route: json!({"reason": "returning"}), team_id: Some("sales".into()) }
        );
        assert_eq!(decision.effects.len(), 1);
        assert_eq!(routed(&decision.effects[0]), (Some("sales"), Some("a1"), None, RouteReason::Default));
        let Effect::Route(routing) = &decision.effects[0] else { unreachable!() };
        assert_eq!(routing.agent.as_ref().unwrap().route, Route::because(RouteReason::Returning));
    }

    #[test]
    fn a_later_message_refreshes_the_open_window_and_reaches_the_holder() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        let decision = world.message_in("wamid.2", "still there?", T0 + HOUR, false);
        assert!(!decision.opened);
        assert_eq!(actions(&decision), ["message_in", "window_refreshed"]);
        assert_eq!(
            bodies(&decision)[1].1,
            EventBody::WindowRefreshed { window: Window::Service, until: T0 + 25 * HOUR }
        );
        assert!(decision.effects.is_empty(), "an open conversation is not routed again");
        let frames: Vec<_> = decision
            .writes
            .iter()
            .filter_map(|op| match op {
                Op::AgentEvent { agent_id, frame } if agent_id == "a1" => Some(frame.as_ref()),
                _ => None,
            })
            .collect();
        assert!(matches!(frames[..], [ServerFrame::Message { .. }, ServerFrame::Window { .. }]), "{frames:?}");
        // After the window closed, the next message opens a new one.
        let decision = world.message_in("wamid.3", "hello?", T0 + 30 * HOUR, false);
        assert_eq!(actions(&decision), ["message_in", "window_opened"]);
    }

    #[test]
    fn a_reply_logs_its_sender_stops_the_first_response_clock_and_opens_the_free_entry_window() {
        let mut world = World::new();
        world.message_in("wamid.1", "I saw your ad", T0, true);
        assert_eq!(world.open.as_ref().unwrap().conversation.source.kind, SourceKind::Paid);
        world.assign("a1");
        let decision = world.send_accepted("wamid.out.1", "a1", "template", T0 + HOUR);
        assert_eq!(
            bodies(&decision),
            [
                (
                    Actor::user("a1"),
                    EventBody::MessageOut {
                        id: "wamid.out.1".into(),
                        message_type: "template".into(),
                        text: None,
                        template: Some("welcome".into())
                    }
                ),
                (Actor::user("a1"), EventBody::WindowOpened { window: Window::FreeEntry, until: T0 + 73 * HOUR }),
            ]
        );
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.first_response_at, Some(T0 + HOUR));
        assert_eq!(record.clocks.frt.as_ref().unwrap().stopped_at, Some(T0 + HOUR));
        assert_eq!(decision.answer.as_ref().unwrap()["message"]["free"], true, "inside the free entry window");
        // A second reply opens nothing more.
        let decision = world.send_accepted("wamid.out.2", "a1", "text", T0 + 2 * HOUR);
        assert_eq!(actions(&decision), ["message_out"]);
    }

    #[test]
    fn a_status_that_advances_is_logged_as_metas_and_one_that_does_not_changes_nothing() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        world.send_accepted("wamid.out.1", "a1", "text", T0 + HOUR);
        let status = |value: &str| -> Status {
            serde_json::from_value(json!({"id": "wamid.out.1", "status": value, "timestamp": "1796086800"})).unwrap()
        };
        let stored = |status: Option<DeliveryStatus>| {
            let mut message = StoredMessage {
                message: Message {
                    id: "wamid.out.1".into(),
                    direction: Direction::Out,
                    kind: "text".into(),
                    text: Some("hello".into()),
                    media: None,
                    at: T0 + HOUR,
                    status: None,
                    free: Some(true),
                    error: None,
                    author: None,
                },
                raw: None,
            };
            message.message.status = status;
            Some((1, Box::new(message)))
        };
        let input = Input::StatusIn {
            inbox_seq: 7,
            conversation_id: "cv000000000001".into(),
            status: Box::new(status("delivered")),
            stored: stored(Some(DeliveryStatus::Sent)),
        };
        let decision = world.apply(input, T0 + 2 * HOUR);
        assert_eq!(
            bodies(&decision),
            [(
                Actor::Meta,
                EventBody::Status { wamid: "wamid.out.1".into(), status: "delivered".into(), error_code: None }
            )]
        );
        assert!(decision.writes.iter().any(|op| matches!(op, Op::PutMessage { index: 1, .. })));
        assert_eq!(world.thread.as_ref().unwrap().last_inbox_seq, 7);
        let stale = Input::StatusIn {
            inbox_seq: 8,
            conversation_id: "cv000000000001".into(),
            status: Box::new(status("sent")),
            stored: stored(Some(DeliveryStatus::Read)),
        };
        let decision = world.apply(stale, T0 + 3 * HOUR);
        assert!(actions(&decision).is_empty(), "a status going back is no event");
        assert!(!decision.writes.iter().any(|op| matches!(op, Op::PutMessage { .. })));
        assert!(decision.writes.iter().any(|op| matches!(op, Op::DeleteInbox(8))), "the entry is still consumed");
    }

    #[test]
    fn close_refuses_without_the_required_fields_and_otherwise_logs_fields_close_and_unassignment() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        let refused = world.decide(Input::Close { by: "a1".into(), fields: Map::new() }, T0 + HOUR).unwrap_err();
        assert_eq!(refused.code, ErrorCode::DispositionRequired);
        let invalid = json!({"outcome": "maybe"}).as_object().cloned().unwrap();
        assert!(world.decide(Input::Close { by: "a1".into(), fields: invalid }, T0 + HOUR).is_err());
        let fields = json!({"outcome": "won"}).as_object().cloned().unwrap();
        let decision = world.apply(Input::Close { by: "a1".into(), fields }, T0 + HOUR);
        assert_eq!(
            bodies(&decision),
            [
                (
                    Actor::user("a1"),
                    EventBody::FieldsChanged {
                        changes: vec![FieldChange { key: "outcome".into(), old: Value::Null, new: json!("won") }]
                    }
                ),
                (
                    Actor::user("a1"),
                    EventBody::Closed {
                        fields: json!({"outcome": "won"}).as_object().cloned().unwrap(),
                        outcome: Some("won".into())
                    }
                ),
                (Actor::user("a1"), EventBody::Unassigned { agent_id: "a1".into(), reason: UnassignReason::Closed }),
            ]
        );
        assert_eq!(
            decision.effects,
            [Effect::ReleaseAgent { agent_id: "a1".into(), conversation_id: "cv000000000001".into() }]
        );
        assert!(world.open.is_none(), "the thread has no open conversation");
        assert_eq!(world.thread.as_ref().unwrap().open_conversation, None);
    }

    #[test]
    fn the_current_teams_schema_applies_and_a_transfer_changes_it() {
        let mut world = World::new();
        let mut ptp_status = DispositionSpec::new("ptp_status", FieldKind::Enum);
        ptp_status.options = vec!["promised".into(), "paid".into()];
        ptp_status.required_on_close = true;
        world.teams[1].dispositions = Some(vec![ptp_status]); // support
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        assert_eq!(world.open.as_ref().unwrap().conversation.team.as_deref(), Some("sales"));
        // Sales has no schema of its own: the global one.
        let ptp = json!({"ptp_status": "promised"}).as_object().cloned().unwrap();
        let refused = world.decide(Input::SetFields { by: "a1".into(), fields: ptp.clone() }, T0).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidField);
        let won = json!({"outcome": "won"}).as_object().cloned().unwrap();
        world.apply(Input::SetFields { by: "a1".into(), fields: won }, T0);
        world.apply(Input::TransferToTeam { by: "a1".into(), team: "support".into(), note: None }, T0 + HOUR);
        // Now support's: `outcome` stays set but is not its field; its own is required.
        let refused = world.decide(Input::Close { by: "m1".into(), fields: Map::new() }, T0 + HOUR).unwrap_err();
        assert_eq!(refused.code, ErrorCode::DispositionRequired);
        assert_eq!(refused.detail.unwrap()["missing"], json!(["ptp_status"]));
        let outcome = json!({"outcome": "lost"}).as_object().cloned().unwrap();
        let refused = world.decide(Input::SetFields { by: "m1".into(), fields: outcome }, T0 + HOUR).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidField, "the old team's field is not the new schema's");
        let decision = world.apply(Input::Close { by: "m1".into(), fields: ptp }, T0 + HOUR);
        let closed = bodies(&decision).into_iter().find_map(|(_, body)| match body {
            EventBody::Closed { fields, .. } => Some(fields),
            _ => None,
        });
        assert_eq!(closed, json!({"outcome": "won", "ptp_status": "promised"}).as_object().cloned());
    }

    #[test]
    fn setting_fields_logs_old_and_new_values_and_nothing_when_nothing_changes() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        world.assign("a1");
        let won = json!({"outcome": "won"}).as_object().cloned().unwrap();
        world.apply(Input::SetFields { by: "a1".into(), fields: won.clone() }, T0 + HOUR);
        let lost = json!({"outcome": "lost"}).as_object().cloned().unwrap();
        let decision = world.apply(Input::SetFields { by: "m1".into(), fields: lost }, T0 + HOUR);
        assert_eq!(
            bodies(&decision),
            [(
                Actor::user("m1"),
                EventBody::FieldsChanged {
                    changes: vec![FieldChange { key: "outcome".into(), old: json!("won"), new: json!("lost") }]
                }
            )]
        );
        let same = json!({"outcome": "lost"}).as_object().cloned().unwrap();
        let decision = world.apply(Input::SetFields { by: "m1".into(), fields: same }, T0 + HOUR);
        assert!(decision.writes.is_empty(), "{:?}", decision.writes);
        assert_eq!(decision.answer.unwrap()["fields"]["outcome"], "lost");
    }

    fn assigned_world() -> World {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        let input = Input::Assign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a1".into(),
            messages: Vec::new(),
            route: Route::because(RouteReason::Default),
        };
        world.apply(input, T0 + 1000);
        world
    }

    #[test]
    fn an_assignment_takes_only_a_queued_conversation_and_confirms_or_gives_back_the_slot() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        let input = Input::Assign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a1".into(),
            messages: Vec::new(),
            route: Route::because(RouteReason::Default),
        };
        let decision = world.apply(input, T0 + 1000);
        assert_eq!(
            bodies(&decision),
            [(
                Actor::System,
                EventBody::Assigned {
                    agent_id: "a1".into(),
                    team_id: Some("sales".into()),
                    route: Some(Route::because(RouteReason::Default))
                }
            )]
        );
        assert_eq!(
            decision.effects,
            [Effect::ConfirmReservation { agent_id: "a1".into(), conversation_id: "cv000000000001".into() }]
        );
        assert!(
            matches!(&decision.writes[1], Op::AgentEvent { agent_id, frame } if agent_id == "a1" && matches!(frame.as_ref(), ServerFrame::Assigned { .. }))
        );
        let again = Input::Assign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a2".into(),
            messages: Vec::new(),
            route: Route::because(RouteReason::Default),
        };
        let decision = world.apply(again, T0 + 2000);
        assert!(decision.writes.is_empty(), "already assigned: nothing changes");
        assert_eq!(
            decision.effects,
            [Effect::CancelReservation { agent_id: "a2".into(), conversation_id: "cv000000000001".into() }]
        );
        assert_eq!(world.open.as_ref().unwrap().conversation.agent.as_deref(), Some("a1"));
    }

    #[test]
    fn an_offline_agents_conversation_is_unassigned_and_routed_again() {
        let mut world = assigned_world();
        let stranger = Input::Unassign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a2".into(),
            reason: UnassignReason::AgentOffline,
        };
        assert!(world.apply(stranger, T0 + HOUR).writes.is_empty(), "not a2's to lose");
        let input = Input::Unassign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a1".into(),
            reason: UnassignReason::AgentOffline,
        };
        let decision = world.apply(input, T0 + HOUR);
        assert_eq!(
            bodies(&decision),
            [
                (Actor::System, EventBody::Unassigned { agent_id: "a1".into(), reason: UnassignReason::AgentOffline }),
                (
                    Actor::System,
                    EventBody::Routed { route: json!({"reason": "offline"}), team_id: Some("sales".into()) }
                ),
            ]
        );
        assert_eq!(routed(&decision.effects[0]), (Some("sales"), None, None, RouteReason::Offline));
        assert_eq!(world.open.as_ref().unwrap().conversation.status, ConversationStatus::Queued);
    }

    #[test]
    fn a_transfer_to_an_agent_logs_transfer_unassignment_and_assignment() {
        let mut world = assigned_world();
        let same = Input::TransferToAgent { by: "boss".into(), target: "a1".into(), note: None, messages: Vec::new() };
        assert_eq!(world.decide(same, T0 + HOUR).unwrap_err().code, ErrorCode::BadRequest);
        let input = Input::TransferToAgent {
            by: "boss".into(),
            target: "a2".into(),
            note: Some("VIP, wants a callback".into()),
            messages: Vec::new(),
        };
        let decision = world.apply(input, T0 + HOUR);
        assert_eq!(actions(&decision), ["transferred", "unassigned", "assigned"]);
        assert_eq!(
            bodies(&decision)[0],
            (
                Actor::user("boss"),
                EventBody::Transferred {
                    from_agent: Some("a1".into()),
                    to_team: None,
                    to_agent: Some("a2".into()),
                    note: Some("VIP, wants a callback".into())
                }
            )
        );
        assert!(matches!(&decision.writes[0], Op::AgentEvent { agent_id, .. } if agent_id == "a1"), "a1 hears first");
        assert_eq!(
            decision.effects,
            [
                Effect::ConfirmReservation { agent_id: "a2".into(), conversation_id: "cv000000000001".into() },
                Effect::ReleaseAgent { agent_id: "a1".into(), conversation_id: "cv000000000001".into() },
            ]
        );
        assert_eq!(world.open.as_ref().unwrap().conversation.agent.as_deref(), Some("a2"));
    }

    #[test]
    fn a_transfer_to_a_team_queues_and_routes_it_there() {
        let mut world = assigned_world();
        let decision =
            world.apply(Input::TransferToTeam { by: "a1".into(), team: "support".into(), note: None }, T0 + HOUR);
        assert_eq!(actions(&decision), ["transferred", "unassigned", "routed"]);
        assert_eq!(
            bodies(&decision)[2],
            (
                Actor::user("a1"),
                EventBody::Routed {
                    route: json!({"reason": "transfer", "from_team": "sales"}),
                    team_id: Some("support".into())
                }
            )
        );
        let record = world.open.as_ref().unwrap();
        assert_eq!(
            (record.conversation.status, record.conversation.team.as_deref()),
            (ConversationStatus::Queued, Some("support"))
        );
        assert_eq!(routed(&decision.effects[0]), (Some("support"), None, None, RouteReason::Transfer));
    }

    #[test]
    fn an_overflow_moves_a_waiting_conversation_to_the_partner_keeping_its_age() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        let input = |from: &str| Input::Overflow {
            conversation_id: "cv000000000001".into(),
            from_team: from.into(),
            to_team: "support".into(),
        };
        let stale = world.apply(input("support"), T0 + HOUR);
        assert!(stale.writes.is_empty(), "not waiting in that team: nothing changes");
        assert_eq!(
            stale.effects,
            [Effect::LeaveTeamQueue { team_id: "support".into(), conversation_id: "cv000000000001".into() }]
        );
        let decision = world.apply(input("sales"), T0 + HOUR);
        assert_eq!(actions(&decision), ["routed"]);
        assert_eq!(
            bodies(&decision)[0].1,
            EventBody::Routed {
                route: json!({"reason": "overflow", "from_team": "sales"}),
                team_id: Some("support".into())
            }
        );
        assert_eq!(
            decision.effects[0],
            Effect::LeaveTeamQueue { team_id: "sales".into(), conversation_id: "cv000000000001".into() }
        );
        assert_eq!(routed(&decision.effects[1]), (Some("support"), None, None, RouteReason::Overflow));
        let record = world.open.as_ref().unwrap();
        assert_eq!((record.conversation.team.as_deref(), record.queued_at), (Some("support"), Some(T0)));
    }

    #[test]
    fn sla_deadlines_log_a_warning_then_a_breach_once_and_count_the_holders_breach() {
        let mut world = assigned_world();
        let clock = world.open.as_ref().unwrap().clocks.frt.clone().unwrap();
        let warning = |due| Input::Deadline {
            conversation_id: "cv000000000001".into(),
            kind: DeadlineKind::FirstResponseWarning,
            due,
        };
        let decision = world.apply(warning(clock.warn_at), clock.warn_at);
        assert_eq!(
            bodies(&decision),
            [(Actor::System, EventBody::SlaWarning { clock: SlaKind::FirstResponse, due: clock.warn_at })]
        );
        assert!(world.apply(warning(clock.warn_at), clock.warn_at + 5).writes.is_empty(), "only once");
        let breach = Input::Deadline {
            conversation_id: "cv000000000001".into(),
            kind: DeadlineKind::FirstResponseBreach,
            due: clock.breach_at,
        };
        let decision = world.apply(breach, clock.breach_at);
        assert_eq!(actions(&decision), ["sla_breach"]);
        assert!(decision.writes.iter().any(|op| matches!(
            op,
            Op::AgentEvent { agent_id, frame } if agent_id == "a1"
                && matches!(**frame, ServerFrame::Sla { state: SlaState::Breached, .. })
        )));
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.clocks.frt_breaches, [("a1".to_owned(), clock.breach_at)], "the holder's breach, once");
        assert_eq!(
            storage::OpenEntry::of(record).frt_breaches,
            record.clocks.frt_breaches,
            "what the open index keeps"
        );
    }

    #[test]
    fn a_warning_or_a_breach_with_no_holder_keeps_no_first_response_breach() {
        let mut world = World::new();
        world.message_in("wamid.1", "hi", T0, false);
        let clock = world.open.as_ref().unwrap().clocks.frt.clone().expect("the first-response clock runs queued");
        for (kind, due, action) in [
            (DeadlineKind::FirstResponseWarning, clock.warn_at, "sla_warning"),
            (DeadlineKind::FirstResponseBreach, clock.breach_at, "sla_breach"),
        ] {
            let decision = world.apply(Input::Deadline { conversation_id: "cv000000000001".into(), kind, due }, due);
            assert_eq!(actions(&decision), [action], "logged");
            assert!(!decision.writes.iter().any(|op| matches!(op, Op::AgentEvent { .. })), "no one to tell");
        }
        let record = world.open.as_ref().unwrap();
        assert!(record.clocks.frt.as_ref().unwrap().breached);
        assert!(record.clocks.frt_breaches.is_empty(), "a queued conversation's breach is no agent's");
    }

    #[test]
    fn a_window_closing_is_logged_only_for_the_current_window() {
        let mut world = assigned_world();
        let until = world.open.as_ref().unwrap().conversation.service_until.unwrap();
        let fired = |due| Input::Deadline {
            conversation_id: "cv000000000001".into(),
            kind: DeadlineKind::ServiceWindowClose,
            due,
        };
        assert!(world.apply(fired(until - HOUR), until).writes.is_empty(), "a refreshed window's old deadline");
        let decision = world.apply(fired(until), until);
        assert_eq!(bodies(&decision), [(Actor::System, EventBody::WindowClosed { window: Window::Service })]);
    }

    #[test]
    fn an_idle_assignment_is_taken_back_and_routed_to_someone_else() {
        let mut world = World::new();
        world.policies = {
            let mut settings = Settings::default();
            settings.sla.reassign_after_s = 600;
            Policies::from_settings(&settings).unwrap()
        };
        world.message_in("wamid.1", "hi", T0, false);
        let input = Input::Assign {
            conversation_id: "cv000000000001".into(),
            agent_id: "a1".into(),
            messages: Vec::new(),
            route: Route::because(RouteReason::Default),
        };
        world.apply(input, T0);
        let due = world.open.as_ref().unwrap().clocks.reassign_at.expect("armed without a first response");
        let input = Input::Deadline { conversation_id: "cv000000000001".into(), kind: DeadlineKind::IdleReassign, due };
        let decision = world.apply(input, due);
        assert_eq!(actions(&decision), ["unassigned", "routed"]);
        assert_eq!(
            bodies(&decision)[1].1,
            EventBody::Routed { route: json!({"reason": "idle"}), team_id: Some("sales".into()) }
        );
        assert_eq!(
            decision.effects[0],
            Effect::ReleaseAgent { agent_id: "a1".into(), conversation_id: "cv000000000001".into() }
        );
        assert_eq!(routed(&decision.effects[1]), (Some("sales"), None, Some("a1"), RouteReason::Idle));
    }

    #[test]
    fn statuses_only_advance() {
        use DeliveryStatus::*;
        assert!(status_advances(Some(Unknown), Sent));
        assert!(status_advances(Some(Unknown), Failed));
        assert!(status_advances(None, Sent));
        assert!(status_advances(Some(Sent), Read));
        assert!(!status_advances(Some(Read), Delivered));
        assert!(status_advances(Some(Read), Failed));
        assert!(!status_advances(Some(Failed), Read));
        assert!(!status_advances(Some(Failed), Failed));
    }

    fn contact_writes(decision: &Decision) -> Vec<&ContactRecord> {
        decision
            .writes
            .iter()
            .filter_map(|op| match op {
                Op::PutContact(record) => Some(record.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_opt_out_word_opts_the_contact_out_in_the_messages_batch_and_start_opts_back_in() {
        let mut world = World::new();
        let first = world.message_in("w1", "hello", T0, false);
        assert!(contact_writes(&first).is_empty(), "an ordinary message writes no contact");
        assert!(!actions(&first).contains(&"contact_updated"));

        let stop = world.message_in("w2", "  stop \n", T0 + 1_000, false);
        assert_eq!(contact_writes(&stop).len(), 1, "whole message, trimmed, any case");
        let record = contact_writes(&stop)[0];
        assert_eq!((record.wa_id.as_str(), record.opted_out, record.updated_at), ("15550001", true, T0 + 1_000));
        assert!(
            matches!(stop.writes.first(), Some(Op::ClaimInbound(_))),
            "the claim comes first: a duplicate skips it"
        );
        assert_eq!(actions(&stop), ["message_in", "window_refreshed", "contact_updated"]);
        let event = stop
            .writes
            .iter()
            .find_map(|op| match op {
                Op::Event(event) if event.body.action() == "contact_updated" => Some(event.as_ref()),
                _ => None,
            })
            .unwrap();
        assert_eq!(event.actor, Actor::Customer);
        assert_eq!(event.contact.as_deref(), Some("15550001"));
        assert_eq!(event.conversation_id.as_deref(), Some("cv000000000001"));
        assert_eq!(
            event.body,
            EventBody::ContactUpdated {
                changes: vec![FieldChange { key: "opted_out".into(), old: json!(false), new: json!(true) }]
            }
        );
        assert!(world.open.is_some(), "the conversation goes on: replies are not blocked");

        let again = world.message_in("w3", "STOP", T0 + 2_000, false);
        assert!(contact_writes(&again).is_empty(), "already opted out: nothing to write");

        world.contact.as_mut().unwrap().city = Some("Pune".into());
        let start = world.message_in("w4", "START", T0 + 3_000, false);
        let record = contact_writes(&start)[0];
        assert!(!record.opted_out);
        assert_eq!(record.city.as_deref(), Some("Pune"), "the rest of the record is kept");

        let sentence = world.message_in("w5", "please stop calling", T0 + 4_000, false);
        assert!(contact_writes(&sentence).is_empty(), "a word inside a sentence is not an opt-out");
    }

    #[test]
    fn the_opt_words_come_from_the_policy() {
        let mut world = World::new();
        world.contact_words = ContactWords { opt_out: vec!["UNSUBSCRIBE".into()], opt_in: vec!["RESUME".into()] };
        assert!(contact_writes(&world.message_in("w1", "stop", T0, false)).is_empty(), "not configured");
        assert!(contact_writes(&world.message_in("w2", "Unsubscribe", T0 + 1, false))[0].opted_out);
        assert!(!contact_writes(&world.message_in("w3", "resume", T0 + 2, false))[0].opted_out);
    }

    // -----------------------------------------------------------------
    // The co-pilot
    // -----------------------------------------------------------------

    /// A world whose `sales` team has a co-pilot flow for paid leads.
    fn copilot_world() -> World {
        let mut world = World::new();
        world.dispositions.extend(
            serde_json::from_value::<Vec<DispositionSpec>>(json!([
                {"key": "budget", "kind": "enum", "options": ["low", "high"]},
                {"key": "units", "kind": "number"},
                {"key": "city", "kind": "text"},
            ]))
            .unwrap(),
        );
        world.teams[0].copilot = Some(
            serde_json::from_value(json!({"flows": [{
                "id": "ads", "sources": ["paid"], "greeting": "Hi!", "qualify_score": 4, "handoff_after_s": 600,
                "unqualified": "close", "not_qualified_fields": {"outcome": "lost"},
                "questions": [
                    {"id": "budget", "text": "Budget?", "field": "budget", "kind": "options", "options": [
                        {"id": "low", "title": "Low", "value": "low", "score": 0},
                        {"id": "high", "title": "High", "value": "high", "score": 2},
                    ]},
                    {"id": "units", "text": "Units?", "field": "units", "kind": "number", "score": 1},
                    {"id": "city", "text": "City?", "field": "city", "kind": "text", "score": 1},
                ],
            }]}))
            .unwrap(),
        );
        crate::copilot::check(world.teams[0].copilot.as_ref().unwrap(), &world.dispositions).unwrap();
        world
    }

    impl World {
        fn tap(&mut self, wamid: &str, id: &str, title: &str, at: UnixMs) -> Decision {
            let message = json!({
                "id": wamid, "from": "15550001", "timestamp": (at / 1000).to_string(), "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}},
            });
            let ingest = IngestMessage {
                phone_number_id: "100".into(),
                contact_key: "15550001".into(),
                contact: None,
                message: Box::new(serde_json::from_value(message).unwrap()),
            };
            let input = Input::MessageIn {
                ingest,
                inbox_seq: None,
                new_conversation_id: None,
                contact: None,
                copilot_model_wait_ms: None,
            };
            self.apply(input, at)
        }
    }

    fn said(decision: &Decision) -> Vec<crate::copilot::Say> {
        decision
            .effects
            .iter()
            .flat_map(|effect| match effect {
                Effect::CopilotSay { say, .. } => say.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_paid_lead_of_a_team_with_a_flow_starts_with_the_copilot_not_in_the_queue() {
        let mut world = copilot_world();
        let decision = world.message_in("wamid.1", "hi", T0, true);
        assert_eq!(actions(&decision), ["opened", "message_in", "window_opened", "routed", "copilot_started"]);
        let bodies = bodies(&decision);
        assert_eq!(
            bodies[4],
            (Actor::Copilot, EventBody::CopilotStarted { flow: "ads".into(), team_id: "sales".into() })
        );
        assert!(!decision.effects.iter().any(|effect| matches!(effect, Effect::Route(_))), "not queued");
        let said = said(&decision);
        assert!(
            matches!(&said[..], [crate::copilot::Say::Choices { body, choices, .. }] if body == "Hi!\n\nBudget?" && choices.len() == 2)
        );
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Bot);
        assert_eq!(record.queued_at, None);
        assert!(record.clocks.frt.is_none(), "the first-response clock starts at the hand-over");
        assert_eq!(record.clocks.copilot_at, Some(T0 + 600_000));
        assert!(deadlines::deadlines_of(record).contains(&(DeadlineKind::Copilot, T0 + 600_000)));
        // An organic conversation of the same team is queued as before.
        let mut organic = copilot_world();
        let decision = organic.message_in("wamid.1", "hi", T0, false);
        assert_eq!(organic.open.as_ref().unwrap().conversation.status, ConversationStatus::Queued);
        assert!(decision.effects.iter().any(|effect| matches!(effect, Effect::Route(_))));
    }

    #[test]
    fn answers_fill_fields_qualify_and_hand_over_to_routing_with_the_handoff_kept() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        let first = world.tap("wamid.2", "cp:budget:high", "High", T0 + 1000);
        assert_eq!(actions(&first), ["message_in", "window_refreshed", "copilot_answered", "fields_changed"]);
        assert_eq!(
            bodies(&first)[2].1,
            EventBody::CopilotAnswered {
                question: "budget".into(),
                field: "budget".into(),
                value: json!("high"),
                score: 2
            }
        );
        assert!(matches!(&said(&first)[..], [crate::copilot::Say::Text(text)] if text == "Units?"));
        world.message_in("wamid.3", "3", T0 + 2000, false);
        let last = world.message_in("wamid.4", "Pune", T0 + 3000, false);
        assert_eq!(
            actions(&last),
            [
                "message_in",
                "window_refreshed",
                "copilot_answered",
                "fields_changed",
                "copilot_qualified",
                "copilot_handoff",
                "routed"
            ]
        );
        let record = world.open.clone().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Queued);
        assert_eq!(record.conversation.fields, object(json!({"budget": "high", "units": 3, "city": "Pune"})));
        let handoff = record.handoff.clone().unwrap();
        assert_eq!(handoff.reason, "qualified");
        assert_eq!(handoff.fields, record.conversation.fields);
        assert!(handoff.summary.contains("Qualified (score 4/4)"), "{}", handoff.summary);
        assert!(record.clocks.frt.is_some() && record.clocks.copilot_at.is_none());
        let route = last.effects.iter().find(|effect| matches!(effect, Effect::Route(_))).expect("routed");
        assert_eq!(routed(route).0, Some("sales"));
        // The assignment's frame carries the hand-over.
        let assigned = world.apply(
            Input::Assign {
                conversation_id: "cv000000000001".into(),
                agent_id: "a1".into(),
                messages: Vec::new(),
                route: Route::because(RouteReason::Default),
            },
            T0 + 4000,
        );
        let frame = assigned
            .writes
            .iter()
            .find_map(|op| match op {
                Op::AgentEvent { frame, .. } => Some(frame.as_ref().clone()),
                _ => None,
            })
            .unwrap();
        let ServerFrame::Assigned { handoff: Some(carried), .. } = frame else { panic!("{frame:?}") };
        assert_eq!(carried, handoff);
    }

    #[test]
    fn talk_to_a_human_hands_over_at_once() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        let decision = world.message_in("wamid.2", "Talk to a human!", T0 + 1000, false);
        let handoff = bodies(&decision).into_iter().find_map(|(actor, body)| match body {
            EventBody::CopilotHandoff { reason, qualified, .. } => Some((actor, reason, qualified)),
            _ => None,
        });
        assert_eq!(handoff, Some((Actor::Copilot, "asked_for_person".to_owned(), false)));
        assert_eq!(world.open.as_ref().unwrap().conversation.status, ConversationStatus::Queued);
    }

    #[test]
    fn the_copilots_deadline_hands_over_on_time_and_not_before() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        let due = T0 + 600_000;
        let input =
            |due| Input::Deadline { conversation_id: "cv000000000001".into(), kind: DeadlineKind::Copilot, due };
        let stale = world.decide(input(due - 1), due).unwrap();
        assert!(stale.writes.is_empty() && stale.events.is_empty(), "not the armed deadline");
        let fired = world.apply(input(due), due);
        assert!(actions(&fired).contains(&"copilot_handoff"));
        assert_eq!(world.open.as_ref().unwrap().handoff.as_ref().unwrap().reason, "timeout");
    }

    #[test]
    fn an_unqualified_lead_is_closed_by_the_copilot_with_its_outcome() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        world.tap("wamid.2", "cp:budget:low", "Low", T0 + 1000);
        world.message_in("wamid.3", "1", T0 + 2000, false);
        let last = world.message_in("wamid.4", "Pune", T0 + 3000, false);
        assert!(world.open.is_none(), "closed");
        assert_eq!(world.thread.as_ref().unwrap().open_conversation, None);
        let closed = bodies(&last);
        assert!(closed.contains(&(Actor::Copilot, EventBody::CopilotClosed { reason: "not_qualified".into() })));
        let Some((actor, EventBody::Closed { outcome, .. })) = closed.last().cloned() else { panic!("{closed:?}") };
        assert_eq!((actor, outcome.as_deref()), (Actor::Copilot, Some("lost")));
        assert!(
            last.writes
                .iter()
                .any(|op| matches!(op, Op::PutThread { record, .. } if record.open_conversation.is_none()))
        );
    }

    #[test]
    fn outside_office_hours_a_handoff_waits_for_the_opening_when_told_to() {
        let mut world = copilot_world();
        // Tuesday 09:00–17:00 UTC; T0 is a Tuesday, 00:00 UTC.
        world.teams[0].hours =
            Some(serde_json::from_value(json!({"timezone": "UTC", "week": {"tue": ["09:00-17:00"]}})).unwrap());
        world.teams[0].copilot.as_mut().unwrap().office_hours = crate::copilot::OfficeHours::Wait;
        let settings = Settings { teams: world.teams.clone(), ..Settings::default() };
        world.policies = Policies::from_settings(&settings).unwrap();
        let opened = world.message_in("wamid.1", "hi", T0, true);
        assert!(
            !opened.effects.iter().any(|effect| matches!(effect, Effect::SendTemplate(_) | Effect::Route(_))),
            "the co-pilot answers, even while the team is closed"
        );
        let asked = world.message_in("wamid.2", "talk to a human", T0 + 1000, false);
        assert!(!actions(&asked).contains(&"copilot_handoff"));
        assert!(
            matches!(&said(&asked)[..], [crate::copilot::Say::Text(text)] if text.contains("(Tue 09:00)")),
            "{:?}",
            said(&asked)
        );
        let opens = T0 + 9 * HOUR;
        let record = world.open.clone().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Bot);
        assert_eq!(record.clocks.copilot_at, Some(opens));
        let input =
            Input::Deadline { conversation_id: "cv000000000001".into(), kind: DeadlineKind::Copilot, due: opens };
        let fired = world.apply(input, opens);
        assert!(actions(&fired).contains(&"copilot_handoff"));
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Queued);
        assert_eq!(record.handoff.as_ref().unwrap().reason, "asked_for_person", "it keeps its reason");
    }

    #[test]
    fn a_transfer_takes_the_conversation_from_the_copilot() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        let input = Input::TransferToTeam { by: "boss".into(), team: "support".into(), note: None };
        world.apply(input, T0 + 1000);
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Queued);
        assert_eq!(record.copilot.as_ref().unwrap().ended.as_deref(), Some("transferred"));
        assert!(record.clocks.copilot_at.is_none() && record.clocks.frt.is_some());
        assert!(!deadlines::deadlines_of(record).iter().any(|(kind, _)| *kind == DeadlineKind::Copilot));
        // Its messages now go to people, not to the co-pilot.
        let later = world.message_in("wamid.2", "Talk to a human", T0 + 2000, false);
        assert!(!actions(&later).contains(&"copilot_handoff"));
    }

    #[test]
    fn the_copilots_sends_carry_its_author_and_leave_the_response_clocks_alone() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        let sent = world.send_accepted("wamid.out1", COPILOT_SENDER, "text", T0 + 500);
        let record = world.open.as_ref().unwrap();
        assert_eq!(record.clocks.last_agent_reply_at, None);
        assert!(record.conversation.free_entry_until.is_some(), "the bot's reply opens the free entry window");
        let (actor, body) = bodies(&sent)[0].clone();
        assert_eq!(actor, Actor::Copilot);
        assert!(matches!(body, EventBody::MessageOut { .. }));
        let message = &sent.answer.as_ref().unwrap()["message"];
        assert_eq!(message["author"], "copilot");
        let by_agent = world.send_accepted("wamid.out2", "a1", "text", T0 + 600);
        assert_eq!(by_agent.answer.as_ref().unwrap()["message"]["author"], "user:a1");
    }

    fn pending_of(world: &World) -> Option<storage::PendingAnswer> {
        world.open.as_ref()?.copilot.as_ref()?.pending.clone()
    }

    #[test]
    fn with_the_model_hook_on_an_unread_answer_is_committed_first_and_stepped_with_the_hooks_reading() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        // Text the built-in rules cannot read: stored, its step pending.
        let stored = world.message_in_with("wamid.2", "we can spend a lot", T0 + 1000, false, Some(7_000));
        assert_eq!(actions(&stored), ["message_in", "window_refreshed"]);
        assert!(said(&stored).is_empty(), "the co-pilot says nothing yet");
        let written = stored.writes.iter().find_map(|op| match op {
            Op::PutConversation(record) => record.copilot.as_ref()?.pending.clone(),
            _ => None,
        });
        assert_eq!(written.map(|answer| answer.message_id), Some("wamid.2".to_owned()), "stored, not only kept");
        let pending = pending_of(&world).expect("pending");
        assert_eq!((pending.message_id.as_str(), pending.text.as_deref()), ("wamid.2", Some("we can spend a lot")));
        let record = world.open.clone().unwrap();
        assert_eq!(record.clocks.copilot_at, Some(T0 + 8_000), "the guard, before the flow's own deadline");
        assert!(deadlines::deadlines_of(&record).contains(&(DeadlineKind::Copilot, T0 + 8_000)));
        // A reading for another message changes nothing.
        let id = record.conversation.id.clone();
        let reading = |message_id: &str, reading, tokens| Input::CopilotReading {
            conversation_id: id.clone(),
            message_id: message_id.into(),
            reading,
            tokens,
        };
        let other = world
            .apply(reading("wamid.9", Some(crate::copilot::ModelInput::Reply("cp:budget:high".into())), 5), T0 + 1500);
        assert!(other.events.is_empty() && other.writes.is_empty());
        // The hook's reading: the answer, its tokens counted.
        let read = world
            .apply(reading("wamid.2", Some(crate::copilot::ModelInput::Reply("cp:budget:high".into())), 40), T0 + 2000);
        assert_eq!(actions(&read), ["copilot_answered", "fields_changed"]);
        assert!(matches!(&said(&read)[..], [crate::copilot::Say::Text(text)] if text == "Units?"));
        let state = world.open.as_ref().unwrap().copilot.clone().unwrap();
        assert_eq!((state.pending, state.tokens, state.question), (None, 40, 1));
        assert_eq!(world.open.as_ref().unwrap().clocks.copilot_at, Some(T0 + 600_000), "the flow's deadline again");
        // A text the built-in rules read is stepped at once, hook or not.
        let at_once = world.message_in_with("wamid.3", "3", T0 + 3000, false, Some(7_000));
        assert_eq!(actions(&at_once), ["message_in", "window_refreshed", "copilot_answered", "fields_changed"]);
        assert_eq!(pending_of(&world), None);
    }

    #[test]
    fn with_the_model_hook_on_a_hand_over_waits_for_its_summary_and_the_guard_takes_a_lost_step() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        world.tap("wamid.2", "cp:budget:high", "High", T0 + 1000);
        world.message_in("wamid.3", "3", T0 + 2000, false);
        // "Pune" is read by the built-in rules but qualifies: the hand-over
        // waits for the summary.
        let stored = world.message_in_with("wamid.4", "Pune", T0 + 3000, false, Some(7_000));
        assert_eq!(actions(&stored), ["message_in", "window_refreshed"]);
        assert_eq!(world.open.as_ref().unwrap().conversation.status, ConversationStatus::Bot);
        // A restart lost the step: the guard takes it with the built-in reading.
        let guard = T0 + 10_000;
        let id = world.open.as_ref().unwrap().conversation.id.clone();
        let fired =
            world.apply(Input::Deadline { conversation_id: id, kind: DeadlineKind::Copilot, due: guard }, guard);
        assert_eq!(
            actions(&fired),
            ["copilot_answered", "fields_changed", "copilot_qualified", "copilot_handoff", "routed"]
        );
        let record = world.open.clone().unwrap();
        assert_eq!(record.conversation.status, ConversationStatus::Queued);
        assert_eq!(record.conversation.fields, object(json!({"budget": "high", "units": 3, "city": "Pune"})));
        assert_eq!(record.copilot.as_ref().unwrap().pending, None);
    }

    #[test]
    fn a_message_after_a_lost_step_takes_the_pending_answer_first() {
        let mut world = copilot_world();
        world.message_in("wamid.1", "hi", T0, true);
        world.message_in_with("wamid.2", "we can spend a lot", T0 + 1000, false, Some(7_000));
        // The step was lost (a restart) and the next message comes before the guard.
        let next = world.message_in_with("wamid.3", "High", T0 + 2000, false, Some(7_000));
        // The pending one, read by the built-in rules (not understood: asked
        // again), then the new one (an answer).
        assert_eq!(actions(&next), ["message_in", "window_refreshed", "copilot_answered", "fields_changed"]);
        let said = said(&next);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(matches!(&said[0], crate::copilot::Say::Choices { body, .. } if body.starts_with("Sorry")), "{said:?}");
        assert!(matches!(&said[1], crate::copilot::Say::Text(text) if text == "Units?"), "{said:?}");
        assert_eq!(pending_of(&world), None);
    }
}
