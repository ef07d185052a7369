//! Contacts (PROTOCOL §8), pure: what a `PATCH` may set and what it
//! changes, which words opt a customer out or in, and the `contact_updated`
//! event that goes with every change of a contact's record. No store, no
//! clock: [`crate::System::update_contact`] and the conversation's decisions
//! (`decide.rs`, for an opt-out word) call these and commit the record and
//! its event in one batch.

use protocol::events::{Actor, Event, EventBody, FieldChange};
use protocol::time::UnixMs;
use protocol::{ApiError, ErrorCode};
use serde_json::{Map, Value, json};
use storage::ContactRecord;

use crate::settings::{AgentSpec, ContactWords};

/// The fields a `PATCH` may set, in the order errors list them.
pub const PATCHABLE: [&str; 7] = ["name", "city", "region", "dealer", "owner", "attributes", "opted_out"];

/// Longest text a `name`, `city`, `region`, `dealer` or attribute string takes.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest attribute key.
pub const MAX_ATTRIBUTE_KEY_CHARS: usize = 64;
/// Most attributes one contact holds.
pub const MAX_ATTRIBUTES: usize = 100;
/// Longest `wa_id` a contact path takes.
pub const MAX_WA_ID_CHARS: usize = 128;

/// A validated `PATCH` body. For each text field: `None` leaves it, `Some(None)`
/// clears it, `Some(Some(text))` sets it. `attributes` merges key by key; a
/// `null` value removes the key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContactPatch {
    pub name: Option<Option<String>>,
    pub city: Option<Option<String>>,
    pub region: Option<Option<String>>,
    pub dealer: Option<Option<String>>,
    pub owner: Option<Option<String>>,
    pub attributes: Option<Map<String, Value>>,
    pub opted_out: Option<bool>,
}

fn invalid_field(field: &str, message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message).with_detail(json!({ "field": field }))
}

/// A contact's `wa_id` as a path names it: not empty, not too long, no
/// control characters.
pub fn check_wa_id(wa_id: &str) -> Result<(), ApiError> {
    if wa_id.is_empty() || wa_id.chars().count() > MAX_WA_ID_CHARS || wa_id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "a contact is named by its WhatsApp id (1 to {MAX_WA_ID_CHARS} characters, no control characters)"
        )));
    }
    Ok(())
}

/// A text field's new value: a non-empty string (trimmed) of at most
/// [`MAX_TEXT_CHARS`], or `null` to clear it.
pub(crate) fn text_or_null(field: &str, value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if !text.trim().is_empty() && text.trim().chars().count() <= MAX_TEXT_CHARS => {
            Ok(Some(text.trim().to_owned()))
        }
        _ => Err(invalid_field(
            field,
            format!("`{field}` must be a non-empty string of at most {MAX_TEXT_CHARS} characters, or null to clear it"),
        )),
    }
}

/// Reads a `PATCH /api/v1/contacts/{wa_id}` body. `agents` are the configured
/// agents (`owner` must name one). Unknown keys, wrong types and an owner
/// nobody configured are refused with a sentence naming the field.
pub fn parse_patch(body: &Value, agents: &[AgentSpec]) -> Result<ContactPatch, ApiError> {
    let Value::Object(body) = body else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object setting any of {}",
            PATCHABLE.join(", ")
        )));
    };
    if body.is_empty() {
        return Err(ApiError::bad_request(format!("the body sets nothing; give any of {}", PATCHABLE.join(", "))));
    }
    let mut patch = ContactPatch::default();
    for (key, value) in body {
        match key.as_str() {
            "name" => patch.name = Some(text_or_null(key, value)?),
            "city" => patch.city = Some(text_or_null(key, value)?),
            "region" => patch.region = Some(text_or_null(key, value)?),
            "dealer" => patch.dealer = Some(text_or_null(key, value)?),
            "owner" => {
                let owner = match value {
                    Value::Null => None,
                    Value::String(id) if agents.iter().any(|agent| &agent.id == id) => Some(id.clone()),
                    Value::String(id) => {
                        return Err(invalid_field(
                            "owner",
                            format!("`owner` must name a configured agent; there is no agent {id:?}"),
                        ));
                    }
                    _ => {
                        return Err(invalid_field(
                            "owner",
                            "`owner` must be an agent id (a string), or null to clear it".to_owned(),
                        ));
                    }
                };
                patch.owner = Some(owner);
            }
            "attributes" => patch.attributes = Some(parse_attributes(value)?),
            "opted_out" => match value {
                Value::Bool(opted_out) => patch.opted_out = Some(*opted_out),
                _ => return Err(invalid_field("opted_out", "`opted_out` must be true or false".to_owned())),
            },
            _ => {
                return Err(invalid_field(
                    key,
                    format!("`{key}` is not a contact field; a PATCH sets any of {}", PATCHABLE.join(", ")),
                ));
            }
        }
    }
    Ok(patch)
}

fn parse_attributes(value: &Value) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(attributes) = value else {
        return Err(invalid_field(
            "attributes",
            "`attributes` must be a JSON object of string, number or bool values (null removes a key)".to_owned(),
        ));
    };
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(invalid_field("attributes", format!("a contact holds at most {MAX_ATTRIBUTES} attributes")));
    }
    for (key, value) in attributes {
        let field = format!("attributes.{key}");
        if key.trim().is_empty() || key.chars().count() > MAX_ATTRIBUTE_KEY_CHARS || key.chars().any(char::is_control) {
            return Err(invalid_field(
                &field,
                format!(
                    "an attribute key must be 1 to {MAX_ATTRIBUTE_KEY_CHARS} characters without control characters"
                ),
            ));
        }
        let fits = match value {
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
            Value::String(text) => text.chars().count() <= MAX_TEXT_CHARS,
            Value::Array(_) | Value::Object(_) => false,
        };
        if !fits {
            return Err(invalid_field(
                &field,
                format!(
                    "`{field}` must be a string (at most {MAX_TEXT_CHARS} characters), a number or a bool, or null \
                     to remove it"
                ),
            ));
        }
    }
    Ok(attributes.clone())
}

fn text_value(text: &Option<String>) -> Value {
    text.as_ref().map_or(Value::Null, |text| Value::String(text.clone()))
}

/// `before` (or a contact with nothing set, named `wa_id`) with `patch`
/// applied at `now`, and what changed (empty: nothing did, and nothing
/// needs writing). Refuses a merge that would pass [`MAX_ATTRIBUTES`].
pub fn apply_patch(
    before: Option<&ContactRecord>,
    wa_id: &str,
    patch: &ContactPatch,
    now: UnixMs,
) -> Result<(ContactRecord, Vec<FieldChange>), ApiError> {
    let mut after = before.cloned().unwrap_or_else(|| ContactRecord::new(wa_id));
    let mut changes = Vec::new();
    let texts = [
        ("name", &patch.name, &mut after.name),
        ("city", &patch.city, &mut after.city),
        ("region", &patch.region, &mut after.region),
        ("dealer", &patch.dealer, &mut after.dealer),
        ("owner", &patch.owner, &mut after.owner),
    ];
    for (key, new, field) in texts {
        if let Some(new) = new
            && field != new
        {
            changes.push(FieldChange { key: key.to_owned(), old: text_value(field), new: text_value(new) });
            field.clone_from(new);
        }
    }
    if let Some(attributes) = &patch.attributes {
        for (key, new) in attributes {
            let old = after.attributes.get(key).cloned().unwrap_or(Value::Null);
            if &old == new {
                continue;
            }
            if new.is_null() {
                after.attributes.remove(key);
            } else {
                after.attributes.insert(key.clone(), new.clone());
            }
            changes.push(FieldChange { key: format!("attributes.{key}"), old, new: new.clone() });
        }
        if after.attributes.len() > MAX_ATTRIBUTES {
            return Err(invalid_field(
                "attributes",
                format!("a contact holds at most {MAX_ATTRIBUTES} attributes; remove some (set them to null) first"),
            ));
        }
    }
    if let Some(opted_out) = patch.opted_out {
        changes.extend(set_opted_out(&mut after, opted_out));
    }
    if !changes.is_empty() {
        after.updated_at = now;
    }
    Ok((after, changes))
}

/// Sets `opted_out`; the change, when there is one.
fn set_opted_out(record: &mut ContactRecord, opted_out: bool) -> Option<FieldChange> {
    if record.opted_out == opted_out {
        return None;
    }
    let change = FieldChange { key: "opted_out".to_owned(), old: json!(record.opted_out), new: json!(opted_out) };
    record.opted_out = opted_out;
    Some(change)
}

/// Whether a customer's text opts them out (`Some(true)`) or back in
/// (`Some(false)`): the whole text, trimmed, is one of the words, in any
/// case. Anything else (a word inside a sentence too) is `None`.
pub fn opt_change(text: &str, words: &ContactWords) -> Option<bool> {
    let text = text.trim().to_lowercase();
    if text.is_empty() {
        return None;
    }
    let is_one_of = |list: &[String]| list.iter().any(|word| word.trim().to_lowercase() == text);
    if is_one_of(&words.opt_out) {
        Some(true)
    } else if is_one_of(&words.opt_in) {
        Some(false)
    } else {
        None
    }
}

/// The customer's opt-out or opt-in word applied to their contact record
/// (`before`, or nothing set) at `now`: the record to write and its change,
/// or `None` when it is already so.
pub fn opt(
    before: Option<&ContactRecord>,
    wa_id: &str,
    opted_out: bool,
    now: UnixMs,
) -> Option<(ContactRecord, FieldChange)> {
    let mut after = before.cloned().unwrap_or_else(|| ContactRecord::new(wa_id));
    let change = set_opted_out(&mut after, opted_out)?;
    after.updated_at = now;
    Some((after, change))
}

/// The `contact_updated` event. `conversation` is the (conversation id,
/// phone number id) it happened in, when it happened in one (an opt-out word).
pub fn contact_event(
    wa_id: &str,
    conversation: Option<(&str, &str)>,
    at: UnixMs,
    actor: Actor,
    changes: Vec<FieldChange>,
) -> Event {
    Event {
        at,
        conversation_id: conversation.map(|(id, _)| id.to_owned()),
        contact: Some(wa_id.to_owned()),
        phone_number_id: conversation.map(|(_, phone)| phone.to_owned()),
        actor,
        body: EventBody::ContactUpdated { changes },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> Vec<AgentSpec> {
        serde_json::from_value(json!([{ "id": "asha" }, { "id": "boss", "role": "manager" }])).unwrap()
    }

    fn refusal(body: Value) -> (ErrorCode, Option<String>, String) {
        let error = parse_patch(&body, &agents()).expect_err("refused");
        let field = error.detail.as_ref().and_then(|detail| detail["field"].as_str()).map(str::to_owned);
        (error.code, field, error.message)
    }

    #[test]
    fn a_patch_is_refused_with_the_field_it_got_wrong() {
        let cases = [
            (json!({"colour": "red"}), ErrorCode::InvalidField, Some("colour")),
            (json!({"owner": "nobody"}), ErrorCode::InvalidField, Some("owner")),
            (json!({"owner": 7}), ErrorCode::InvalidField, Some("owner")),
            (json!({"city": ""}), ErrorCode::InvalidField, Some("city")),
            (json!({"city": "x".repeat(MAX_TEXT_CHARS + 1)}), ErrorCode::InvalidField, Some("city")),
            (json!({"dealer": ["D1"]}), ErrorCode::InvalidField, Some("dealer")),
            (json!({"opted_out": "yes"}), ErrorCode::InvalidField, Some("opted_out")),
            (json!({"attributes": [1]}), ErrorCode::InvalidField, Some("attributes")),
            (json!({"attributes": {"tags": ["a"]}}), ErrorCode::InvalidField, Some("attributes.tags")),
            (json!({"attributes": {"nested": {"a": 1}}}), ErrorCode::InvalidField, Some("attributes.nested")),
            (json!({"attributes": {"": 1}}), ErrorCode::InvalidField, Some("attributes.")),
            (json!({}), ErrorCode::BadRequest, None),
            (json!(["city"]), ErrorCode::BadRequest, None),
            (json!(null), ErrorCode::BadRequest, None),
        ];
        for (body, code, field) in cases {
            let (got_code, got_field, message) = refusal(body.clone());
            assert_eq!((got_code, got_field.as_deref()), (code, field), "{body}: {message}");
            assert!(!message.is_empty() && !message.ends_with('.'), "{body}: {message:?}");
        }
        assert!(refusal(json!({"colour": "red"})).2.contains("name, city, region, dealer, owner, attributes"));
    }

    #[test]
    fn a_patch_sets_clears_and_merges_and_reports_each_change() {
        let patch = parse_patch(
            &json!({"city": " Pune ", "owner": "asha", "attributes": {"tier": "gold", "score": 3, "vip": true}}),
            &agents(),
        )
        .unwrap();
        let (first, changes) = apply_patch(None, "9198", &patch, 10).unwrap();
        assert_eq!(first.wa_id, "9198");
        assert_eq!(first.city.as_deref(), Some("Pune"), "trimmed");
        assert_eq!(first.owner.as_deref(), Some("asha"));
        assert_eq!(first.updated_at, 10);
        let keys: Vec<&str> = changes.iter().map(|change| change.key.as_str()).collect();
        assert_eq!(keys, ["city", "owner", "attributes.score", "attributes.tier", "attributes.vip"]);
        assert_eq!(changes[0], FieldChange { key: "city".into(), old: Value::Null, new: json!("Pune") });

        let patch = parse_patch(
            &json!({"owner": null, "city": "Pune", "attributes": {"tier": null, "score": 4.5}, "opted_out": true}),
            &agents(),
        )
        .unwrap();
        let (second, changes) = apply_patch(Some(&first), "9198", &patch, 20).unwrap();
        assert_eq!(second.owner, None, "null clears");
        assert_eq!(second.city.as_deref(), Some("Pune"));
        assert_eq!(
            second.attributes,
            serde_json::from_value::<Map<String, Value>>(json!({"score": 4.5, "vip": true})).unwrap()
        );
        assert!(second.opted_out);
        assert_eq!(
            changes,
            vec![
                FieldChange { key: "owner".into(), old: json!("asha"), new: Value::Null },
                FieldChange { key: "attributes.score".into(), old: json!(3), new: json!(4.5) },
                FieldChange { key: "attributes.tier".into(), old: json!("gold"), new: Value::Null },
                FieldChange { key: "opted_out".into(), old: json!(false), new: json!(true) },
            ],
            "an unchanged city is not a change"
        );

        let (same, changes) = apply_patch(Some(&second), "9198", &patch, 30).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(same, second, "nothing changed, not even the time");
    }

    #[test]
    fn a_merge_past_the_attribute_bound_is_refused() {
        let mut before = ContactRecord::new("9198");
        for index in 0..MAX_ATTRIBUTES {
            before.attributes.insert(format!("k{index}"), json!(index));
        }
        let patch = parse_patch(&json!({"attributes": {"one_more": 1}}), &agents()).unwrap();
        let error = apply_patch(Some(&before), "9198", &patch, 1).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidField);
        let patch = parse_patch(&json!({"attributes": {"one_more": 1, "k0": null}}), &agents()).unwrap();
        assert!(apply_patch(Some(&before), "9198", &patch, 1).is_ok(), "one out, one in");
    }

    #[test]
    fn only_a_whole_message_that_is_a_word_opts_in_or_out() {
        let words = ContactWords { opt_out: vec!["STOP".into(), "Unsubscribe".into()], opt_in: vec!["START".into()] };
        for (text, expected) in [
            ("STOP", Some(true)),
            ("stop", Some(true)),
            ("  Stop \n", Some(true)),
            ("UNSUBSCRIBE", Some(true)),
            ("start", Some(false)),
            (" START ", Some(false)),
            ("please stop", None),
            ("STOP!", None),
            ("stopp", None),
            ("", None),
            ("   ", None),
            ("hello", None),
        ] {
            assert_eq!(opt_change(text, &words), expected, "{text:?}");
        }
    }

    #[test]
    fn opting_twice_changes_nothing_the_second_time() {
        let (record, change) = opt(None, "9198", true, 5).unwrap();
        assert!(record.opted_out);
        assert_eq!(change, FieldChange { key: "opted_out".into(), old: json!(false), new: json!(true) });
        assert_eq!(opt(Some(&record), "9198", true, 6), None);
        let (back, _) = opt(Some(&record), "9198", false, 7).unwrap();
        assert!(!back.opted_out);
        assert_eq!(back.updated_at, 7);
    }
}
