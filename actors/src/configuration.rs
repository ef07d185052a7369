//! Configuration changed at run time through the admin API (PROTOCOL §7
//! `PUT /api/v1/admin/routing`), pure: how a refused routing configuration
//! is reported, the `configuration_changed` event, and which routing
//! configuration a start uses. `System::set_routing` commits and applies;
//! `routing` checks and compiles (`RoutingTable::new`, unchanged here).
//!
//! The persisted form is the section's JSON under its name in the store's
//! `settings` table; a section not there is the configuration file's.

use protocol::events::{Actor, Event, EventBody};
use protocol::time::UnixMs;
use protocol::{ApiError, ErrorCode};
use serde_json::json;

use crate::routing::{RoutingError, RoutingSpec, RoutingTable};
use crate::settings::{AgentSpec, Settings};

/// The name of the routing section in the store's `settings` table and in
/// the `configuration_changed` event.
pub const ROUTING: &str = "routing";

/// A routing configuration `RoutingTable::new` refused, as the client sees
/// it: `invalid_field`, the message naming the place, the field and the
/// problem, and `detail` `{place, field, problem}` plus, for a rule, `rule`
/// (its id, when it has one) and `index` (its position in `rules`, from 0).
pub fn routing_refusal(error: &RoutingError, spec: &RoutingSpec) -> ApiError {
    let mut detail = json!({"place": error.place, "field": error.field, "problem": error.problem});
    if let Some(index) = rule_index(&error.place) {
        detail["index"] = json!(index);
        if let Some(rule) = spec.rules.get(index).filter(|rule| !rule.id.trim().is_empty()) {
            detail["rule"] = json!(rule.id);
        }
    }
    ApiError::new(ErrorCode::InvalidField, format!("the routing configuration is refused: {error}")).with_detail(detail)
}

/// `routing.rules[4] (pune_ad)` → 4 (how `RoutingTable::new` names a rule).
fn rule_index(place: &str) -> Option<usize> {
    let rest = place.strip_prefix("routing.rules[")?;
    let (index, _) = rest.split_once(']')?;
    index.parse().ok()
}

/// The event of an accepted `PUT`: the whole configuration before and
/// after (rules are few; a reader sees exactly what changed without a
/// diff format of ours to learn), by the user who made it.
pub fn routing_changed(before: &RoutingSpec, after: &RoutingSpec, user: &str, at: UnixMs) -> Event {
    changed(ROUTING, json!({"before": before, "after": after}), user, at)
}

/// A `configuration_changed` event of `section` (no conversation, no
/// contact), by the user who made the change.
pub fn changed(section: &str, detail: serde_json::Value, user: &str, at: UnixMs) -> Event {
    Event {
        at,
        conversation_id: None,
        contact: None,
        phone_number_id: None,
        actor: Actor::user(user),
        body: EventBody::ConfigurationChanged { section: section.to_owned(), detail },
    }
}

/// The routing table a start uses, given the stored section (`None`: never
/// set through the API, or set back to the file's): the stored one when it
/// still validates against the configured teams, agents and numbers, else
/// `Err` with why (the caller starts with the file's and says so).
pub fn stored_routing_table(stored: &[u8], settings: &Settings, agents: &[AgentSpec]) -> Result<RoutingTable, String> {
    let spec: RoutingSpec = serde_json::from_slice(stored)
        .map_err(|error| format!("the stored routing configuration cannot be read: {error}"))?;
    RoutingTable::new(spec, &settings.teams, agents, &settings.numbers).map_err(|error| error.to_string())
}

/// What a routing configuration is stored as (its JSON); `None` when it is
/// the configuration file's own, which the store then forgets, so the file
/// is followed again (an edit of it takes effect at the next start).
pub fn stored_form(spec: &RoutingSpec, settings: &Settings) -> Result<Option<Vec<u8>>, ApiError> {
    if spec == &settings.routing {
        return Ok(None);
    }
    serde_json::to_vec(spec)
        .map(Some)
        .map_err(|error| ApiError::bad_request(format!("the routing configuration cannot be stored: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// An event's detail, read back: `(before, after)`.
    fn changed_specs(detail: &Value) -> Option<(RoutingSpec, RoutingSpec)> {
        let before = serde_json::from_value(detail.get("before")?.clone()).ok()?;
        let after = serde_json::from_value(detail.get("after")?.clone()).ok()?;
        Some((before, after))
    }
    use crate::routing::RuleSpec;
    use crate::settings::TeamSpec;

    fn settings() -> Settings {
        Settings {
            teams: ["sales", "support"]
                .into_iter()
                .map(|id| TeamSpec { id: id.into(), ..Default::default() })
                .collect(),
            ..Settings::default()
        }
    }

    fn rule(id: &str, team: &str) -> RuleSpec {
        RuleSpec { id: id.into(), to_team: Some(team.into()), owner_first: true, ..Default::default() }
    }

    fn refused(spec: RoutingSpec) -> ApiError {
        let settings = settings();
        let error =
            RoutingTable::new(spec.clone(), &settings.teams, &settings.agents, &settings.numbers).expect_err("refused");
        routing_refusal(&error, &spec)
    }

    #[test]
    fn a_refused_rule_is_named_by_id_index_and_field() {
        let spec = RoutingSpec { rules: vec![rule("ok", "sales"), rule("pune_ad", "nowhere")], ..Default::default() };
        let error = refused(spec);
        assert_eq!(error.code, ErrorCode::InvalidField);
        assert!(error.message.contains("routing.rules[1] (pune_ad).to_team") && error.message.contains("nowhere"));
        assert_eq!(
            error.detail,
            Some(json!({"place": "routing.rules[1] (pune_ad)", "field": "to_team", "index": 1, "rule": "pune_ad",
                        "problem": "no team has id \"nowhere\""}))
        );
    }

    #[test]
    fn a_rule_without_an_id_and_a_top_level_field_have_no_rule() {
        let error = refused(RoutingSpec { rules: vec![rule("", "sales")], ..Default::default() });
        let detail = error.detail.expect("detail");
        assert_eq!((detail["field"].as_str(), detail["index"].as_u64()), (Some("id"), Some(0)));
        assert!(detail.get("rule").is_none(), "{detail}");
        let error = refused(RoutingSpec { owner_wait_s: 86_401, ..Default::default() });
        let detail = error.detail.expect("detail");
        assert_eq!((detail["place"].as_str(), detail["field"].as_str()), (Some("routing"), Some("owner_wait_s")));
        assert!(detail.get("index").is_none() && detail.get("rule").is_none(), "{detail}");
    }

    #[test]
    fn the_event_carries_both_configurations_by_the_user() {
        let before = RoutingSpec::default();
        let after = RoutingSpec { rules: vec![rule("urgent", "support")], ..Default::default() };
        let event = routing_changed(&before, &after, "root", 42);
        assert_eq!(
            (event.actor.label(), event.body.action(), event.at),
            ("user:root".into(), "configuration_changed", 42)
        );
        let EventBody::ConfigurationChanged { section, detail } = &event.body else { panic!("{event:?}") };
        assert_eq!(section, "routing");
        assert_eq!(changed_specs(detail), Some((before, after)));
        assert_eq!(detail["after"]["rules"][0], json!({"id": "urgent", "to_team": "support"}), "TOML's fields");
    }

    #[test]
    fn a_start_uses_the_stored_configuration_only_while_it_validates() {
        let settings = settings();
        let good = RoutingSpec { rules: vec![rule("urgent", "support")], ..Default::default() };
        let table = stored_routing_table(&serde_json::to_vec(&good).expect("json"), &settings, &settings.agents)
            .expect("valid");
        assert_eq!(table.spec(), &good);
        let gone = RoutingSpec { rules: vec![rule("urgent", "retired_team")], ..Default::default() };
        let problem =
            stored_routing_table(&serde_json::to_vec(&gone).expect("json"), &settings, &settings.agents).err();
        assert!(problem.as_deref().is_some_and(|text| text.contains("urgent") && text.contains("retired_team")));
        let problem = stored_routing_table(b"{\"rules\": 3}", &settings, &settings.agents).err();
        assert!(problem.is_some_and(|text| text.contains("cannot be read")));
    }

    #[test]
    fn the_files_own_configuration_is_not_stored() {
        let mut settings = settings();
        settings.routing = RoutingSpec { rules: vec![rule("file", "sales")], ..Default::default() };
        assert_eq!(stored_form(&settings.routing.clone(), &settings), Ok(None));
        let other = RoutingSpec { rules: vec![rule("api", "support")], ..Default::default() };
        let stored = stored_form(&other, &settings).expect("storable").expect("stored");
        assert_eq!(serde_json::from_slice::<RoutingSpec>(&stored).ok(), Some(other));
    }
}
