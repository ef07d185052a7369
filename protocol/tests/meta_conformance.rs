//! Conformance with Meta's own OpenAPI description of the WhatsApp Business
//! Platform (`shared/meta/business-messaging-api_v23.0.yaml`, see the README next
//! to it for its known defects and how they are worked around here).
//!
//! - Every webhook example Meta publishes parses with [`WebhookPayload::parse`].
//! - Every body the engine emits validates against the `sendMessage` request
//!   schema, and that validator demonstrably rejects broken bodies.
//! - Meta's text and template send examples read as [`SendMessageRequest`], its
//!   success answers as [`SendMessageResponse`], its error answers as
//!   [`GraphErrorEnvelope`].

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Value, json};
use switchboard_protocol::graph::{Choice, GraphErrorEnvelope, SendMessageRequest, SendMessageResponse};
use switchboard_protocol::webhook::{InboundMessage, WebhookPayload};

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/meta/business-messaging-api_v23.0.yaml");
const WEBHOOK_PATH: &str = "/whatsapp/webhooks";
const SEND_MESSAGE_PATH: &str = "/{Version}/{Phone-Number-ID}/messages";
const SEND_MESSAGE_OPERATION: &str = "sendMessage";
const HTTP_METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// ---------------------------------------------------------------------------
// Reading the OpenAPI document
// ---------------------------------------------------------------------------

/// The whole document as JSON, parsed once for all tests.
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text =
            std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|error| panic!("cannot read {SPEC_PATH}: {error}"));
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{SPEC_PATH} is not YAML: {error}"));
        yaml_to_json(yaml)
    })
}

/// YAML to JSON; mapping keys that YAML reads as numbers (`200:`) become strings.
fn yaml_to_json(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Yaml;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(flag) => Value::Bool(flag),
        Yaml::Number(number) => {
            if let Some(int) = number.as_i64() {
                json!(int)
            } else if let Some(uint) = number.as_u64() {
                json!(uint)
            } else {
                number.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
            }
        }
        Yaml::String(text) => Value::String(text),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(text) => text,
                        other => match yaml_to_json(other) {
                            Value::String(text) => text,
                            scalar => scalar.to_string(),
                        },
                    };
                    (key, yaml_to_json(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Follows a local `$ref` (`#/components/...`); other values are returned as they are.
fn resolve(node: &'static Value) -> &'static Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references are expected, found {reference:?}"));
            resolve(spec().pointer(pointer).unwrap_or_else(|| panic!("dangling reference {reference:?}")))
        }
        None => node,
    }
}

fn operation(path: &str, method: &str) -> &'static Value {
    spec()["paths"]
        .get(path)
        .and_then(|item| item.get(method))
        .unwrap_or_else(|| panic!("the document has no `{} {path}`", method.to_uppercase()))
}

/// The operation with this `operationId`, with the path it is found under.
fn operation_by_id(operation_id: &str) -> (&'static str, &'static Value) {
    let paths = spec()["paths"].as_object().expect("`paths` is an object");
    let found: Vec<(&str, &Value)> = paths
        .iter()
        .flat_map(|(path, item)| HTTP_METHODS.iter().filter_map(move |method| item.get(*method).map(|op| (path, op))))
        .filter(|(_, op)| op["operationId"] == operation_id)
        .map(|(path, op)| (path.as_str(), op))
        .collect();
    assert_eq!(found.len(), 1, "expected exactly one operation {operation_id:?}, found {}", found.len());
    found[0]
}

/// The `application/json` media type object of a request body or a response.
fn json_media(body_or_response: &'static Value, what: &str) -> &'static Value {
    resolve(body_or_response)
        .get("content")
        .and_then(|content| content.get("application/json"))
        .unwrap_or_else(|| panic!("{what} has no application/json content"))
}

/// The examples of a media type object, by name, whichever form they take:
/// `example: ...` (named "example") or `examples: {name: {value: ...}}`, where an
/// entry may be a `$ref` to `#/components/examples/...`.
fn media_examples(media: &'static Value, what: &str) -> Vec<(String, Value)> {
    let mut examples = Vec::new();
    if let Some(example) = media.get("example") {
        examples.push(("example".to_owned(), example.clone()));
    }
    if let Some(named) = media.get("examples") {
        let named = named.as_object().unwrap_or_else(|| panic!("{what}: `examples` is not a map"));
        for (name, entry) in named {
            let entry = resolve(entry);
            let value = entry.get("value").unwrap_or_else(|| {
                panic!("{what}: example {name:?} has no inline `value` (externalValue is not supported)")
            });
            examples.push((name.clone(), value.clone()));
        }
    }
    examples
}

// ---------------------------------------------------------------------------
// 1. Webhooks
// ---------------------------------------------------------------------------

/// The typed sub-object Switchboard reads for a message of this `type`, if it
/// types one: it must be present when Meta says the message is of that type.
fn typed_part_present(message: &InboundMessage) -> Option<bool> {
    Some(match message.kind.as_str() {
        "text" => message.text.is_some(),
        "image" => message.image.is_some(),
        "audio" => message.audio.is_some(),
        "video" => message.video.is_some(),
        "document" => message.document.is_some(),
        "sticker" => message.sticker.is_some(),
        "location" => message.location.is_some(),
        "contacts" => message.contacts.as_ref().is_some_and(|contacts| !contacts.is_empty()),
        "interactive" => message.interactive.is_some(),
        "button" => message.button.is_some(),
        "reaction" => message.reaction.is_some(),
        "order" => message.order.is_some(),
        "system" => message.system.is_some(),
        _ => return None,
    })
}

#[test]
fn every_webhook_example_parses() {
    let media = json_media(&operation(WEBHOOK_PATH, "post")["requestBody"], "POST /whatsapp/webhooks request body");
    let examples = media_examples(media, "POST /whatsapp/webhooks");
    assert!(
        examples.len() >= 10,
        "expected at least 10 webhook examples under `POST {WEBHOOK_PATH}`, found {}",
        examples.len()
    );

    let mut messages_checked = 0;
    let mut referrals = Vec::new();
    for (name, example) in &examples {
        let body = serde_json::to_vec(example).expect("a YAML example serialises to JSON");
        let payload = WebhookPayload::parse(&body)
            .unwrap_or_else(|error| panic!("webhook example {name:?}: WebhookPayload::parse failed: {error}"));
        assert!(!payload.entry.is_empty(), "webhook example {name:?}: no entry");

        for (entry_index, entry) in payload.entry.iter().enumerate() {
            assert!(!entry.changes.is_empty(), "webhook example {name:?}: entry[{entry_index}] has no change");
            for (change_index, change) in entry.changes.iter().enumerate() {
                if change.field != "messages" {
                    continue;
                }
                let at = format!("webhook example {name:?}, entry[{entry_index}].changes[{change_index}]");
                let value =
                    change.messages_value().unwrap_or_else(|error| panic!("{at}: messages_value() failed: {error}"));
                assert!(!value.metadata.phone_number_id.is_empty(), "{at}: empty metadata.phone_number_id");
                assert!(
                    !value.messages.is_empty() || !value.statuses.is_empty() || !value.errors.is_empty(),
                    "{at}: a messages change with neither messages, statuses nor errors"
                );

                for (message_index, message) in value.messages.iter().enumerate() {
                    let at = format!("{at}.value.messages[{message_index}] (type {:?})", message.kind);
                    assert!(!message.id.is_empty(), "{at}: empty id");
                    let system_without_sender =
                        message.kind == "system" && message.from.is_none() && message.from_user_id.is_none();
                    if !system_without_sender {
                        assert!(message.sender_key().is_some(), "{at}: no sender_key()");
                    }
                    let timestamp_ms = message.timestamp_ms();
                    assert!(
                        timestamp_ms.is_some_and(|ms| ms > 0),
                        "{at}: timestamp {:?} gives timestamp_ms() = {timestamp_ms:?}",
                        message.timestamp
                    );
                    if let Some(present) = typed_part_present(message) {
                        assert!(present, "{at}: the typed `{}` object is missing", message.kind);
                    }
                    if let Some(referral) = &message.referral {
                        referrals.push((name.clone(), referral.clone()));
                    }
                    messages_checked += 1;
                }
            }
        }
    }

    assert!(messages_checked >= 10, "only {messages_checked} inbound messages were checked");
    assert!(!referrals.is_empty(), "no webhook example carries a Click-to-WhatsApp `referral`");
    for (name, referral) in &referrals {
        assert!(
            referral.ctwa_clid.as_deref().is_some_and(|id| !id.is_empty())
                || referral.source_id.as_deref().is_some_and(|id| !id.is_empty()),
            "webhook example {name:?}: referral has neither ctwa_clid nor source_id: {referral:?}"
        );
    }
    println!(
        "{} webhook examples parsed, {messages_checked} inbound messages checked, {} with a referral",
        examples.len(),
        referrals.len()
    );
}

// ---------------------------------------------------------------------------
// 2. Engine bodies against the sendMessage request schema
// ---------------------------------------------------------------------------

/// What [`apply_readme_fixes`] changed, so that a test can say it did something.
#[derive(Debug, Default)]
struct SchemaFixes {
    /// `additionalProperties` removed from a part of an `allOf`.
    all_of_additional_properties_dropped: usize,
    /// `discriminator` + `oneOf` turned into `anyOf`.
    discriminated_one_of_to_any_of: usize,
}

/// The README's workarounds for Meta's schema defects, applied everywhere:
/// - a part of an `allOf` loses `additionalProperties` (otherwise the
///   type-specific part rejects `messaging_product`, `to`, ... from the base part);
///   nested objects (`text`, ...) keep theirs;
/// - `discriminator` + `oneOf` becomes `anyOf` (the variants are told apart by
///   their `type` enum anyway; `oneOf` over overlapping variants is Meta's bug).
fn apply_readme_fixes(node: &mut Value, fixes: &mut SchemaFixes) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get_mut("allOf") {
                for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                    if part.remove("additionalProperties").is_some() {
                        fixes.all_of_additional_properties_dropped += 1;
                    }
                }
            }
            let variants = if map.contains_key("discriminator") { map.remove("oneOf") } else { None };
            if let Some(variants) = variants {
                map.insert("anyOf".to_owned(), variants);
                fixes.discriminated_one_of_to_any_of += 1;
            }
            for child in map.values_mut() {
                apply_readme_fixes(child, fixes);
            }
        }
        Value::Array(items) => {
            for child in items {
                apply_readme_fixes(child, fixes);
            }
        }
        _ => {}
    }
}

/// A JSON Schema (2020-12) validator for the `sendMessage` request body: the
/// operation's schema as the root, with the document's whole `components` embedded
/// so that every `#/components/...` reference resolves, README fixes applied.
fn send_message_schema() -> &'static (jsonschema::Validator, SchemaFixes) {
    static SCHEMA: OnceLock<(jsonschema::Validator, SchemaFixes)> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let (path, op) = operation_by_id(SEND_MESSAGE_OPERATION);
        assert_eq!(path, SEND_MESSAGE_PATH, "operation {SEND_MESSAGE_OPERATION:?} moved");
        let schema = json_media(&op["requestBody"], "sendMessage request body")["schema"].clone();
        assert!(!schema.is_null(), "sendMessage request body has no schema");

        let mut root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "allOf": [schema],
            "components": spec()["components"].clone(),
        });
        let mut fixes = SchemaFixes::default();
        apply_readme_fixes(&mut root, &mut fixes);
        // The defects the README describes are there; if Meta fixes them, revisit.
        assert!(fixes.all_of_additional_properties_dropped > 0, "no allOf part had additionalProperties: {fixes:?}");
        assert!(fixes.discriminated_one_of_to_any_of > 0, "no discriminator + oneOf found: {fixes:?}");

        let validator = jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|error| panic!("the sendMessage request schema does not compile: {error}"));
        (validator, fixes)
    })
}

fn send_message_validator() -> &'static jsonschema::Validator {
    &send_message_schema().0
}

/// Every reason `body` does not validate, one line each.
fn schema_errors(body: &Value) -> Vec<String> {
    send_message_validator()
        .iter_errors(body)
        .map(|error| {
            format!("{error} (at {:?}, schema {:?})", error.instance_path.to_string(), error.schema_path.to_string())
        })
        .collect()
}

fn engine_bodies() -> Vec<(&'static str, SendMessageRequest)> {
    vec![
        ("text", SendMessageRequest::text("919800000001", "hello")),
        (
            "template with two body parameters",
            SendMessageRequest::template("919800000001", "order_update", "en_US", &["A".into(), "B".into()]),
        ),
        ("template without parameters", SendMessageRequest::template("919800000001", "order_update", "en_US", &[])),
        (
            "co-pilot reply buttons",
            SendMessageRequest::interactive("919800000001", "Your budget?", &choices(3), "Choose"),
        ),
        ("co-pilot list", SendMessageRequest::interactive("919800000001", "Your city?", &choices(12), "Choose a city")),
        (
            "co-pilot buttons with long titles",
            SendMessageRequest::interactive(
                "919800000001",
                &"Which of these? ".repeat(100),
                &[Choice { id: "a".into(), title: "A title far longer than twenty".into(), description: None }],
                "Choose",
            ),
        ),
    ]
}

/// `n` choices (a list of more than three has descriptions, long ones).
fn choices(n: usize) -> Vec<Choice> {
    (0..n)
        .map(|index| Choice {
            id: format!("opt_{index}"),
            title: format!("Option number {index} with a long title"),
            description: (n > 3).then(|| "a description ".repeat(10)),
        })
        .collect()
}

#[test]
fn every_body_the_engine_emits_validates() {
    for (name, request) in engine_bodies() {
        let body = serde_json::to_value(&request).expect("a SendMessageRequest serialises");
        let errors = schema_errors(&body);
        assert!(errors.is_empty(), "engine body {name:?} fails Meta's sendMessage schema:\n{errors:#?}\nbody: {body}");
    }
    println!("{} engine bodies validate; README fixes applied: {:?}", engine_bodies().len(), send_message_schema().1);
}

/// Starts from a body the engine emits (which must validate) and breaks it.
fn broken(request: &SendMessageRequest, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = serde_json::to_value(request).expect("a SendMessageRequest serialises");
    assert!(schema_errors(&body).is_empty(), "the starting body must validate: {body}");
    edit(&mut body);
    body
}

#[test]
fn the_send_validator_rejects_broken_bodies() {
    let text = SendMessageRequest::text("919800000001", "hello");
    let template = SendMessageRequest::template("919800000001", "order_update", "en_US", &["A".into()]);
    let buttons = SendMessageRequest::interactive("919800000001", "Your budget?", &choices(2), "Choose");
    let list = SendMessageRequest::interactive("919800000001", "Your city?", &choices(5), "Choose");
    let remove = |object: &mut Value, key: &str| {
        object.as_object_mut().expect("an object").remove(key).expect("the key is there");
    };

    let cases: Vec<(&str, Value)> = vec![
        ("text without `to`", broken(&text, |body| remove(body, "to"))),
        ("text without `messaging_product`", broken(&text, |body| remove(body, "messaging_product"))),
        ("`type: text` without a `text` object", broken(&text, |body| remove(body, "text"))),
        ("`text` is a number", broken(&text, |body| body["text"] = json!(42))),
        ("`text.body` is a number", broken(&text, |body| body["text"]["body"] = json!(42))),
        ("unknown field inside `text`", broken(&text, |body| body["text"]["colour"] = json!("red"))),
        ("unknown `recipient_type`", broken(&text, |body| body["recipient_type"] = json!("broadcast"))),
        ("`type: template` without a `template` object", broken(&template, |body| remove(body, "template"))),
        (
            "template `language` without `code`",
            broken(&template, |body| remove(&mut body["template"]["language"], "code")),
        ),
        (
            "template `language.policy` not `deterministic`",
            broken(&template, |body| body["template"]["language"]["policy"] = json!("fallback")),
        ),
        ("template without `name`", broken(&template, |body| remove(&mut body["template"], "name"))),
        (
            "template component of unknown type",
            broken(&template, |body| body["template"]["components"][0]["type"] = json!("sidebar")),
        ),
        ("`type: interactive` without `interactive`", broken(&buttons, |body| remove(body, "interactive"))),
        ("interactive without `action`", broken(&buttons, |body| remove(&mut body["interactive"], "action"))),
        (
            "reply button title over 20 characters",
            broken(&buttons, |body| {
                body["interactive"]["action"]["buttons"][0]["reply"]["title"] = json!("x".repeat(21))
            }),
        ),
        (
            "four reply buttons",
            broken(&buttons, |body| {
                let button = body["interactive"]["action"]["buttons"][0].clone();
                body["interactive"]["action"]["buttons"] = json!([button, button, button, button]);
            }),
        ),
        (
            "list row title over 24 characters",
            broken(&list, |body| {
                body["interactive"]["action"]["sections"][0]["rows"][0]["title"] = json!("x".repeat(25))
            }),
        ),
        ("list without its `button`", broken(&list, |body| remove(&mut body["interactive"]["action"], "button"))),
        ("unknown interactive type", broken(&list, |body| body["interactive"]["type"] = json!("carousel_of_doom"))),
    ];
    assert!(cases.len() >= 3);
    for (name, body) in &cases {
        assert!(
            !schema_errors(body).is_empty(),
            "broken body {name:?} passes Meta's sendMessage schema, so the validator is not checking it: {body}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Meta's sendMessage examples against our types
// ---------------------------------------------------------------------------

/// Send examples Meta's file gets wrong, with the error reading them must give.
/// If Meta fixes one, reading it succeeds and the test asks to drop the entry.
const KNOWN_BROKEN_SEND_EXAMPLES: &[(&str, &str)] = [
    // Quick-reply button parameters written `text: true` / `text: false`
    // (probably a sample's `Yes` / `No` turned into booleans by a YAML 1.1
    // conversion). A parameter's text is a string; the engine sends no buttons.
    ("Send Sample Issue Resolution Template", "invalid type: boolean `true`, expected a string"),
]
.as_slice();

/// The kind of a send example: its `type`, or Meta's default `text` when it has
/// none (Meta documents `type` as optional, defaulting to `text`).
fn send_example_kind(example: &Value) -> Option<&str> {
    match example.get("type") {
        Some(kind) => kind.as_str(),
        None if example.get("text").is_some() => Some("text"),
        None => None,
    }
}

#[test]
fn meta_text_and_template_send_examples_read_as_send_message_request() {
    let (_, op) = operation_by_id(SEND_MESSAGE_OPERATION);
    let examples =
        media_examples(json_media(&op["requestBody"], "sendMessage request body"), "sendMessage request body");
    assert!(examples.len() >= 10, "expected many sendMessage request examples, found {}", examples.len());

    let (mut texts, mut templates, mut known_broken, mut skipped) = (0, 0, 0, BTreeSet::new());
    for (name, example) in &examples {
        let kind = send_example_kind(example);
        if !matches!(kind, Some("text" | "template")) {
            skipped.insert(kind.unwrap_or("<no type>").to_owned());
            continue;
        }
        let read = serde_json::from_value::<SendMessageRequest>(example.clone());
        if let Some((_, expected)) = KNOWN_BROKEN_SEND_EXAMPLES.iter().find(|(broken, _)| broken == name) {
            match read {
                Err(error) => assert!(
                    error.to_string().contains(expected),
                    "sendMessage example {name:?} is known broken ({expected}) but fails otherwise: {error}"
                ),
                Ok(_) => panic!("sendMessage example {name:?} now reads: remove it from KNOWN_BROKEN_SEND_EXAMPLES"),
            }
            known_broken += 1;
            continue;
        }
        let request = read.unwrap_or_else(|error| {
            panic!("sendMessage example {name:?} does not read as SendMessageRequest: {error}\n{example}")
        });

        assert_eq!(Some(request.kind.as_str()), kind, "sendMessage example {name:?}: `type`");
        assert_eq!(request.to, example["to"].as_str().unwrap_or_default(), "sendMessage example {name:?}: `to`");
        assert_eq!(request.messaging_product, "whatsapp", "sendMessage example {name:?}: `messaging_product`");
        if let Some(reply_to) = example.pointer("/context/message_id") {
            let context =
                request.context.as_ref().unwrap_or_else(|| panic!("sendMessage example {name:?}: context lost"));
            assert_eq!(
                context.message_id,
                reply_to.as_str().unwrap_or_default(),
                "sendMessage example {name:?}: context"
            );
        }
        if kind == Some("text") {
            let text = request.text.as_ref().unwrap_or_else(|| panic!("sendMessage example {name:?}: no `text`"));
            assert_eq!(
                text.body,
                example["text"]["body"].as_str().unwrap_or_default(),
                "sendMessage example {name:?}: text.body"
            );
            assert!(request.template.is_none(), "sendMessage example {name:?}: unexpected template");
            texts += 1;
        } else {
            let template =
                request.template.as_ref().unwrap_or_else(|| panic!("sendMessage example {name:?}: no `template`"));
            assert_eq!(
                template.name,
                example["template"]["name"].as_str().unwrap_or_default(),
                "sendMessage example {name:?}: template.name"
            );
            assert_eq!(
                template.language.code,
                example["template"]["language"]["code"].as_str().unwrap_or_default(),
                "sendMessage example {name:?}: template.language.code"
            );
            let components = example["template"]["components"].as_array().map_or(0, Vec::len);
            assert_eq!(template.components.len(), components, "sendMessage example {name:?}: template.components");
            templates += 1;
        }
    }

    assert_eq!(known_broken, KNOWN_BROKEN_SEND_EXAMPLES.len(), "a known broken example is gone: update the list");
    assert!(texts >= 2, "expected at least 2 text examples, checked {texts}");
    assert!(templates >= 5, "expected at least 5 template examples, checked {templates}");
    println!(
        "{} sendMessage request examples: {texts} text and {templates} template read as SendMessageRequest, \
         {known_broken} known broken; other kinds skipped: {skipped:?}",
        examples.len()
    );
}

/// Every response of an operation: (status, examples of its JSON content).
fn response_examples(op: &'static Value, what: &str) -> Vec<(String, String, Value)> {
    let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what} has no responses"));
    let mut found = Vec::new();
    for (status, response) in responses {
        let response = resolve(response);
        let Some(media) = response.get("content").and_then(|content| content.get("application/json")) else {
            continue;
        };
        for (name, example) in media_examples(media, &format!("{what} response {status}")) {
            found.push((status.clone(), name, example));
        }
    }
    found
}

fn is_success(status: &str) -> bool {
    status.starts_with('2')
}

#[test]
fn meta_send_message_responses_read_as_our_types() {
    let (_, op) = operation_by_id(SEND_MESSAGE_OPERATION);
    let (mut successes, mut errors, mut other_shapes) = (0, 0, Vec::new());
    for (status, name, example) in response_examples(op, "sendMessage") {
        let at = format!("sendMessage response {status} example {name:?}");
        if is_success(&status) {
            if example.get("messages").is_none() {
                // `{"success": true}`: the answer to a read receipt / typing
                // indicator, which is not a SendMessageRequest the engine sends.
                assert_eq!(example, json!({"success": true}), "{at}: an unexpected success shape");
                other_shapes.push(name);
                continue;
            }
            let response: SendMessageResponse = serde_json::from_value(example.clone())
                .unwrap_or_else(|error| panic!("{at} does not read as SendMessageResponse: {error}\n{example}"));
            assert_eq!(response.messaging_product, "whatsapp", "{at}: messaging_product");
            assert!(!response.messages.is_empty(), "{at}: no message");
            assert!(response.messages.iter().all(|message| !message.id.is_empty()), "{at}: a message without id");
            successes += 1;
        } else {
            let envelope: GraphErrorEnvelope = serde_json::from_value(example.clone())
                .unwrap_or_else(|error| panic!("{at} does not read as GraphErrorEnvelope: {error}\n{example}"));
            assert!(!envelope.error.message.is_empty(), "{at}: empty error message");
            errors += 1;
        }
    }
    assert!(successes >= 10, "expected many sendMessage success examples, checked {successes}");
    println!(
        "sendMessage responses: {successes} success examples read as SendMessageResponse, {errors} error examples as \
         GraphErrorEnvelope, skipped {other_shapes:?}"
    );
}

/// sendMessage publishes no error example, so take the error answers of every
/// Graph operation in the document: they share the `{"error": {...}}` envelope.
#[test]
fn meta_graph_error_examples_read_as_graph_error_envelope() {
    let paths = spec()["paths"].as_object().expect("`paths` is an object");
    let mut distinct = BTreeSet::new();
    let mut checked = 0;
    for (path, item) in paths {
        for method in HTTP_METHODS {
            let Some(op) = item.get(method) else { continue };
            if op.get("responses").is_none() {
                continue;
            }
            let what = format!("{} {path}", method.to_uppercase());
            for (status, name, example) in response_examples(op, &what) {
                if is_success(&status) || example.get("error").is_none() {
                    continue;
                }
                let at = format!("{what} response {status} example {name:?}");
                let envelope: GraphErrorEnvelope = serde_json::from_value(example.clone())
                    .unwrap_or_else(|error| panic!("{at} does not read as GraphErrorEnvelope: {error}\n{example}"));
                assert!(!envelope.error.message.is_empty(), "{at}: empty error message");
                assert!(envelope.error.code != 0, "{at}: error code 0");
                // Fields we do not name (`is_transient`, `error_user_msg`, ...) are kept.
                let round_trip = serde_json::to_value(&envelope).expect("an envelope serialises");
                assert_eq!(round_trip, example, "{at}: reading and writing the envelope changed it");
                distinct.insert(example.to_string());
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "expected many Graph error examples, checked {checked}");
    println!("{checked} Graph error response examples ({} distinct) read as GraphErrorEnvelope", distinct.len());
}
