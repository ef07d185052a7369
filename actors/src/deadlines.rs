//! Pure decisions about time: SLA clocks, which deadlines a conversation has
//! armed, and what a fired deadline means. Unit- and property-tested without
//! a runtime.

use std::collections::HashMap;

use protocol::model::{ConversationStatus, SourceKind};
use protocol::time::UnixMs;
use protocol::ws::{SlaKind, SlaState};
use storage::{ConversationRecord, OpenEntry, SlaClock};

use crate::hours::Schedule;
use crate::settings::{Settings, SlaSpec};
use crate::timers::DeadlineKind;
use protocol::rules::{FREE_ENTRY_WINDOW_MS, SERVICE_WINDOW_MS};

/// The SLA targets and hours that apply to one team's conversations.
#[derive(Clone, Debug)]
pub struct TeamPolicy {
    pub sla: SlaSpec,
    pub schedule: Schedule,
    /// Sent once when a conversation opens outside `schedule`.
    pub closed_template: Option<protocol::ws::TemplateRequest>,
}

/// Policies by team, plus the default for conversations without a team.
#[derive(Clone, Debug)]
pub struct Policies {
    by_team: HashMap<String, TeamPolicy>,
    default: TeamPolicy,
}

impl Policies {
    pub fn from_settings(settings: &Settings) -> Result<Policies, String> {
        let default = TeamPolicy { sla: settings.sla.clone(), schedule: Schedule::always(), closed_template: None };
        let mut by_team = HashMap::new();
        for team in &settings.teams {
            let schedule = match &team.hours {
                Some(hours) => Schedule::parse(hours).map_err(|problem| format!("team {}: {problem}", team.id))?,
                None => Schedule::always(),
            };
            let sla = team.sla.as_ref().map_or_else(|| settings.sla.clone(), |over| over.apply(&settings.sla));
            let closed_template = team.closed_template.clone();
            by_team.insert(team.id.clone(), TeamPolicy { sla, schedule, closed_template });
        }
        Ok(Policies { by_team, default })
    }

    pub fn of(&self, team: Option<&str>) -> &TeamPolicy {
        team.and_then(|team| self.by_team.get(team)).unwrap_or(&self.default)
    }
}

/// A clock for `target_s` of business time from `start`, warning at 80 %.
pub fn sla_clock(start: UnixMs, target_s: u64, schedule: &Schedule) -> SlaClock {
    let target_ms = (target_s as i64).saturating_mul(1000);
    SlaClock {
        started_at: start,
        warn_at: schedule.add(start, target_ms * 4 / 5),
        breach_at: schedule.add(start, target_ms),
        warned: false,
        breached: false,
        stopped_at: None,
    }
}

/// Stops a running clock at `now`; returns whether it was running.
pub fn stop_clock(clock: &mut Option<SlaClock>, now: UnixMs) -> bool {
    match clock {
        Some(running) if running.stopped_at.is_none() => {
            running.stopped_at = Some(now);
            true
        }
        _ => false,
    }
}

/// Every deadline the record wants armed now.
pub fn deadlines_of(record: &ConversationRecord) -> Vec<(DeadlineKind, UnixMs)> {
    let conversation = &record.conversation;
    let clocks = &record.clocks;
    collect(Parts {
        status: conversation.status,
        service_until: conversation.service_until,
        free_entry_until: conversation.free_entry_until,
        clocks: [&clocks.frt, &clocks.nrt, &clocks.trt],
        reassign_at: clocks.reassign_at,
        copilot_at: clocks.copilot_at,
    })
}

/// The same deadlines, from the open index's entry (at start).
pub fn deadlines_of_entry(entry: &OpenEntry) -> Vec<(DeadlineKind, UnixMs)> {
    collect(Parts {
        status: entry.status,
        service_until: entry.service_until,
        free_entry_until: entry.free_entry_until,
        clocks: [&entry.frt, &entry.nrt, &entry.trt],
        reassign_at: entry.reassign_at,
        copilot_at: entry.copilot_at,
    })
}

/// What deadlines depend on: first, next and resolution clocks in that order.
struct Parts<'a> {
    status: ConversationStatus,
    service_until: Option<UnixMs>,
    free_entry_until: Option<UnixMs>,
    clocks: [&'a Option<SlaClock>; 3],
    reassign_at: Option<UnixMs>,
    copilot_at: Option<UnixMs>,
}

fn collect(parts: Parts<'_>) -> Vec<(DeadlineKind, UnixMs)> {
    let mut wanted = Vec::new();
    if parts.status == ConversationStatus::Closed {
        return wanted;
    }
    if let Some(until) = parts.service_until {
        wanted.push((DeadlineKind::ServiceWindowClose, until));
    }
    if let Some(until) = parts.free_entry_until {
        wanted.push((DeadlineKind::FreeEntryClose, until));
    }
    let [frt, nrt, trt] = parts.clocks;
    for (clock, warning, breach) in [
        (frt, DeadlineKind::FirstResponseWarning, DeadlineKind::FirstResponseBreach),
        (nrt, DeadlineKind::NextResponseWarning, DeadlineKind::NextResponseBreach),
        (trt, DeadlineKind::ResolutionWarning, DeadlineKind::ResolutionBreach),
    ] {
        if let Some(clock) = clock.as_ref().filter(|clock| clock.stopped_at.is_none()) {
            if !clock.warned {
                wanted.push((warning, clock.warn_at));
            }
            if !clock.breached {
                wanted.push((breach, clock.breach_at));
            }
        }
    }
    if let Some(at) = parts.reassign_at {
        wanted.push((DeadlineKind::IdleReassign, at));
    }
    if let Some(at) = parts.copilot_at.filter(|_| parts.status == ConversationStatus::Bot) {
        wanted.push((DeadlineKind::Copilot, at));
    }
    wanted.retain(|(_, due)| *due != UnixMs::MAX);
    wanted
}

/// What a fired deadline means for the record now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Stale: the state moved on since it was armed.
    Nothing,
    /// A window closed: tell the holder.
    WindowClosed,
    /// An SLA warning or breach; the flag is already set on the record.
    Sla(SlaKind, SlaState),
    /// No first response in time: give the conversation to someone else.
    Reassign,
    /// The co-pilot's deadline: the machine decides what it means.
    Copilot,
}

/// Applies a fired deadline to the record (setting SLA flags) and says what it means.
pub fn on_fired(record: &mut ConversationRecord, kind: DeadlineKind, due: UnixMs, now: UnixMs) -> Fired {
    if record.conversation.status == ConversationStatus::Closed || now < due {
        return Fired::Nothing;
    }
    let clocks = &mut record.clocks;
    let sla = |clock: &mut Option<SlaClock>, sla_kind: SlaKind, state: SlaState| -> Fired {
        let Some(clock) = clock.as_mut().filter(|clock| clock.stopped_at.is_none()) else { return Fired::Nothing };
        let (at, flag) = match state {
            SlaState::Warning => (clock.warn_at, &mut clock.warned),
            SlaState::Breached => (clock.breach_at, &mut clock.breached),
        };
        if at != due || *flag {
            return Fired::Nothing;
        }
        *flag = true;
        Fired::Sla(sla_kind, state)
    };
    match kind {
        DeadlineKind::ServiceWindowClose if record.conversation.service_until == Some(due) => Fired::WindowClosed,
        DeadlineKind::FreeEntryClose if record.conversation.free_entry_until == Some(due) => Fired::WindowClosed,
        DeadlineKind::FirstResponseWarning => sla(&mut clocks.frt, SlaKind::FirstResponse, SlaState::Warning),
        DeadlineKind::FirstResponseBreach => sla(&mut clocks.frt, SlaKind::FirstResponse, SlaState::Breached),
        DeadlineKind::NextResponseWarning => sla(&mut clocks.nrt, SlaKind::NextResponse, SlaState::Warning),
        DeadlineKind::NextResponseBreach => sla(&mut clocks.nrt, SlaKind::NextResponse, SlaState::Breached),
        DeadlineKind::ResolutionWarning => sla(&mut clocks.trt, SlaKind::Resolution, SlaState::Warning),
        DeadlineKind::ResolutionBreach => sla(&mut clocks.trt, SlaKind::Resolution, SlaState::Breached),
        DeadlineKind::IdleReassign
            if clocks.reassign_at == Some(due)
                && record.conversation.status == ConversationStatus::Assigned
                && record.first_response_at.is_none() =>
        {
            clocks.reassign_at = None;
            Fired::Reassign
        }
        DeadlineKind::Copilot
            if clocks.copilot_at == Some(due) && record.conversation.status == ConversationStatus::Bot =>
        {
            Fired::Copilot
        }
        _ => Fired::Nothing,
    }
}

const DAY_MS: i64 = 24 * 3_600_000;

/// The UTC day number of `at` (for "today's" counts: first-response breaches).
pub fn utc_day_of(at: UnixMs) -> i64 {
    at.div_euclid(DAY_MS)
}

/// The service window after a customer message at `message_at`.
pub fn service_until(last_customer_at: UnixMs) -> UnixMs {
    last_customer_at + SERVICE_WINDOW_MS
}

/// Whether the business's first outbound message, accepted at `accepted_at`,
/// opens the free entry point window: the conversation came from an ad or
/// post (`entry_at` is that customer message) and this is the first reply,
/// within 24 h of it. Returns the window's end.
pub fn free_entry_until(record: &ConversationRecord, accepted_at: UnixMs) -> Option<UnixMs> {
    let clocks = &record.clocks;
    let entry_at = clocks.entry_at?;
    let qualifies = record.conversation.source.kind == SourceKind::Paid
        && clocks.first_outbound_at.is_none()
        && accepted_at < entry_at + SERVICE_WINDOW_MS;
    qualifies.then_some(accepted_at + FREE_ENTRY_WINDOW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::model::{Contact, Conversation, Source};

    fn record(status: ConversationStatus) -> ConversationRecord {
        ConversationRecord {
            conversation: Conversation {
                id: "cv000000000001".into(),
                contact: Contact { wa_id: "91".into(), name: None },
                phone_number_id: "1".into(),
                status,
                team: None,
                agent: Some("a".into()),
                source: Source { kind: SourceKind::Paid, ..Source::organic() },
                service_until: None,
                free_entry_until: None,
                fields: Default::default(),
                opened_at: 0,
                closed_at: None,
                messages: None,
            },
            thread_key: "1:91".into(),
            message_count: 1,
            last_customer_at: None,
            queued_at: None,
            assigned_at: None,
            first_response_at: None,
            clocks: Default::default(),
            route: None,
            copilot: None,
            handoff: None,
        }
    }

    const DAY: i64 = 24 * 3_600_000;

    proptest! {
        #[test]
        fn the_free_entry_window_needs_a_first_reply_within_24_hours(entry in 0i64..1_000 * DAY, delay in 0i64..2 * DAY) {
            let mut conversation = record(ConversationStatus::Assigned);
            conversation.clocks.entry_at = Some(entry);
            let opened = free_entry_until(&conversation, entry + delay);
            if delay < DAY {
                prop_assert_eq!(opened, Some(entry + delay + 3 * DAY));
            } else {
                prop_assert_eq!(opened, None, "a reply at 24:00:00 or later is too late");
            }
            conversation.clocks.first_outbound_at = Some(entry);
            prop_assert_eq!(free_entry_until(&conversation, entry + delay), None, "only the first reply opens it");
        }

        #[test]
        fn sla_deadlines_fire_once_and_only_when_due(start in 0i64..1_000_000_000, target in 1u64..100_000, early in 1i64..1_000) {
            let mut conversation = record(ConversationStatus::Assigned);
            conversation.clocks.frt = Some(sla_clock(start, target, &Schedule::always()));
            let breach_at = start + target as i64 * 1000;
            prop_assert_eq!(conversation.clocks.frt.as_ref().unwrap().breach_at, breach_at);
            prop_assert!(deadlines_of(&conversation).contains(&(DeadlineKind::FirstResponseBreach, breach_at)));
            // Fired early (a restart between arming and firing cannot make it early, but a manual clock can).
            prop_assert_eq!(on_fired(&mut conversation, DeadlineKind::FirstResponseBreach, breach_at, breach_at - early), Fired::Nothing);
            prop_assert_eq!(
                on_fired(&mut conversation, DeadlineKind::FirstResponseBreach, breach_at, breach_at),
                Fired::Sla(SlaKind::FirstResponse, SlaState::Breached)
            );
            // Fired again (re-armed after a restart): nothing more.
            prop_assert_eq!(on_fired(&mut conversation, DeadlineKind::FirstResponseBreach, breach_at, breach_at + 5), Fired::Nothing);
            prop_assert!(!deadlines_of(&conversation).iter().any(|(kind, _)| *kind == DeadlineKind::FirstResponseBreach));
        }

        #[test]
        fn a_stopped_clock_never_fires(start in 0i64..1_000_000_000, target in 1u64..100_000, reply_after in 0i64..100_000_000) {
            let mut conversation = record(ConversationStatus::Assigned);
            conversation.clocks.frt = Some(sla_clock(start, target, &Schedule::always()));
            let breach_at = conversation.clocks.frt.as_ref().unwrap().breach_at;
            if reply_after < breach_at - start {
                stop_clock(&mut conversation.clocks.frt, start + reply_after);
                prop_assert_eq!(on_fired(&mut conversation, DeadlineKind::FirstResponseBreach, breach_at, breach_at), Fired::Nothing);
            }
        }
    }

    #[test]
    fn window_close_fires_only_for_the_current_window() {
        let mut conversation = record(ConversationStatus::Assigned);
        conversation.conversation.service_until = Some(2 * DAY);
        assert_eq!(
            on_fired(&mut conversation, DeadlineKind::ServiceWindowClose, DAY, DAY),
            Fired::Nothing,
            "refreshed since"
        );
        assert_eq!(on_fired(&mut conversation, DeadlineKind::ServiceWindowClose, 2 * DAY, 2 * DAY - 1), Fired::Nothing);
        assert_eq!(
            on_fired(&mut conversation, DeadlineKind::ServiceWindowClose, 2 * DAY, 2 * DAY),
            Fired::WindowClosed
        );
    }

    #[test]
    fn team_overrides_replace_only_the_keys_they_set() {
        use crate::settings::{SlaOverride, Strategy, TeamSpec};
        let mut settings = Settings::default();
        settings.sla.first_response_s = 300;
        settings.sla.next_response_s = 600;
        settings.teams = vec![
            TeamSpec {
                id: "collections".into(),
                name: None,
                assignment: Strategy::LeastLoaded,
                sla: Some(SlaOverride { first_response_s: Some(60), ..Default::default() }),
                ..Default::default()
            },
            TeamSpec { id: "sales".into(), assignment: Strategy::RoundRobin, ..Default::default() },
        ];
        let policies = Policies::from_settings(&settings).unwrap();
        assert_eq!(policies.of(Some("collections")).sla.first_response_s, 60);
        assert_eq!(policies.of(Some("collections")).sla.next_response_s, 600, "unset keys keep the global value");
        assert_eq!(policies.of(Some("sales")).sla.first_response_s, 300);
        assert_eq!(policies.of(None).sla.first_response_s, 300);
        assert_eq!(policies.of(Some("unknown")).sla.first_response_s, 300);
    }

    #[test]
    fn idle_reassignment_only_without_a_first_response() {
        let mut conversation = record(ConversationStatus::Assigned);
        conversation.clocks.reassign_at = Some(600_000);
        conversation.first_response_at = Some(1);
        assert_eq!(on_fired(&mut conversation, DeadlineKind::IdleReassign, 600_000, 600_000), Fired::Nothing);
        conversation.first_response_at = None;
        assert_eq!(on_fired(&mut conversation, DeadlineKind::IdleReassign, 600_000, 600_000), Fired::Reassign);
        assert_eq!(conversation.clocks.reassign_at, None);
    }
}
