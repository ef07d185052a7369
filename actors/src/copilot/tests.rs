use super::*;
use serde_json::json;

const T0: UnixMs = 1_796_083_200_000;

fn schema() -> Vec<DispositionSpec> {
    serde_json::from_value(json!([
        {"key": "outcome", "kind": "enum", "options": ["won", "lost", "not_qualified"], "required_on_close": true},
        {"key": "budget", "label": "Budget", "kind": "enum", "options": ["<10L", "10-20L", ">20L"]},
        {"key": "city", "kind": "text"},
        {"key": "units", "kind": "number"},
        {"key": "visit", "kind": "date"},
        {"key": "name", "kind": "text"},
    ]))
    .unwrap()
}

fn spec() -> CopilotSpec {
    serde_json::from_value(json!({
        "flows": [{
            "id": "ads",
            "sources": ["paid"],
            "greeting": "Hi! Thanks for your interest.",
            "qualify_score": 5,
            "handoff_after_s": 600,
            "questions": [
                {"id": "budget", "text": "Your budget?", "field": "budget", "kind": "options", "options": [
                    {"id": "low", "title": "Under 10 lakh", "value": "<10L", "score": 0},
                    {"id": "mid", "title": "10–20 lakh", "value": "10-20L", "score": 2},
                    {"id": "high", "title": "Over 20 lakh", "value": ">20L", "score": 3},
                ]},
                {"id": "units", "text": "How many units?", "field": "units", "kind": "number", "min": 1, "max": 50, "score": 1},
                {"id": "city", "text": "Which city?", "field": "city", "kind": "text", "pattern": "^[A-Za-z ]+$", "score": 2},
            ],
            "unqualified": "close",
            "not_qualified_fields": {"outcome": "not_qualified"},
        }, {
            "id": "walk_in",
            "questions": [{"id": "name", "text": "Your name?", "field": "name", "kind": "text"}],
            "qualify_score": 1,
        }],
    }))
    .unwrap()
}

fn paid() -> Source {
    Source {
        kind: SourceKind::Paid,
        source_id: Some("ad1".into()),
        headline: Some("Spring offer".into()),
        ctwa_clid: Some("clid".into()),
        ..Source::organic()
    }
}

struct World {
    spec: CopilotSpec,
    schema: Vec<DispositionSpec>,
    source: Source,
    opens_at: Option<UnixMs>,
    free_entry_open: bool,
}

impl World {
    fn new() -> World {
        World { spec: spec(), schema: schema(), source: paid(), opens_at: None, free_entry_open: true }
    }

    fn context(&self, now: UnixMs) -> Context<'_> {
        Context {
            now,
            opens_at: self.opens_at,
            opens_label: Some("Mon 09:00"),
            source: &self.source,
            free_entry_open: self.free_entry_open,
            schema: &self.schema,
        }
    }

    fn flow(&self) -> &FlowSpec {
        &self.spec.flows[0]
    }

    fn start(&self) -> Step {
        start(self.flow(), "sales", &self.context(T0))
    }

    fn text(&self, state: &CopilotState, text: &str, now: UnixMs) -> Step {
        let input = Input::Message { text: Some(text), reply_id: None, model: None };
        step(&self.spec, self.flow(), state, input, &self.context(now))
    }

    fn tap(&self, state: &CopilotState, id: &str, title: &str) -> Step {
        let input = Input::Message { text: Some(title), reply_id: Some(id), model: None };
        step(&self.spec, self.flow(), state, input, &self.context(T0 + 1000))
    }
}

fn body(say: &Say) -> &str {
    match say {
        Say::Text(text) => text,
        Say::Choices { body, .. } => body,
        Say::Template(template) => &template.name,
    }
}

#[test]
fn the_configuration_example_checks() {
    check(&spec(), &schema()).unwrap();
}

#[test]
fn a_flow_is_chosen_by_source_first_match_wins() {
    let spec = spec();
    assert_eq!(select_flow(&spec, &paid()).unwrap().id, "ads");
    assert_eq!(select_flow(&spec, &Source::organic()).unwrap().id, "walk_in", "no sources: any conversation");
    let mut only_paid = spec.clone();
    only_paid.flows.truncate(1);
    assert!(select_flow(&only_paid, &Source::organic()).is_none(), "organic goes to people");
    only_paid.flows[0].sources = vec!["ad:ad2".into(), "ref:SPRING".into()];
    assert!(select_flow(&only_paid, &paid()).is_none());
    let referral = Source { kind: SourceKind::Referral, code: Some("SPRING".into()), ..Source::organic() };
    assert!(select_flow(&only_paid, &referral).is_some());
    only_paid.flows[0].sources = vec!["ad:ad1".into()];
    assert!(select_flow(&only_paid, &paid()).is_some());
}

#[test]
fn it_starts_with_the_greeting_and_the_first_question_as_reply_buttons() {
    let world = World::new();
    let started = world.start();
    assert_eq!(started.say.len(), 1, "one message: greeting and question together");
    let Say::Choices { body, choices, .. } = &started.say[0] else { panic!("{:?}", started.say) };
    assert_eq!(body, "Hi! Thanks for your interest.\n\nYour budget?");
    assert_eq!(
        choices.iter().map(|choice| choice.id.as_str()).collect::<Vec<_>>(),
        ["cp:budget:low", "cp:budget:mid", "cp:budget:high"]
    );
    assert_eq!(started.deadline, Some(T0 + 600_000));
    assert_eq!((started.state.flow.as_str(), started.state.team.as_str(), started.state.question), ("ads", "sales", 0));
    let request = protocol::graph::SendMessageRequest::interactive("1", body, choices, "Choose");
    assert_eq!(request.interactive.unwrap().kind, "button");
}

#[test]
fn three_answers_qualify_and_hand_over_with_a_summary() {
    let world = World::new();
    let state = world.start().state;
    let step1 = world.tap(&state, "cp:budget:high", "Over 20 lakh");
    assert_eq!(
        step1.answered,
        [Answered { question: "budget".into(), field: "budget".into(), value: json!(">20L"), score: 3 }]
    );
    assert_eq!(body(&step1.say[0]), "How many units?");
    assert!(step1.end.is_none() && step1.qualified.is_none());
    let step2 = world.text(&step1.state, "about 2 units", T0 + 2000);
    assert_eq!(step2.fields.get("units"), Some(&json!(2)));
    assert_eq!(step2.state.score, 4);
    let step3 = world.text(&step2.state, "Pune", T0 + 3000);
    assert_eq!(step3.qualified, Some(6));
    assert!(step3.say.is_empty(), "no handoff_message configured: nothing said");
    let Some(End::Handoff { reason, summary, qualified }) = &step3.end else { panic!("{step3:?}") };
    assert_eq!(reason, "qualified");
    assert!(qualified);
    assert_eq!(
        summary,
        "Paid lead from ad 'Spring offer'. Budget: Over 20 lakh; units: 2; city: Pune. Qualified (score 6/5)."
    );
    assert_eq!(step3.state.ended.as_deref(), Some("handoff"));
    assert_eq!(step3.deadline, None);
}

#[test]
fn options_are_understood_from_text_too() {
    let world = World::new();
    let question = &world.flow().questions[0];
    for said in ["10–20 lakh", "10-20L", "mid", "2", "  10–20 LAKH! "] {
        assert_eq!(interpret(question, Some(said), None), Some((json!("10-20L"), 2)), "{said:?}");
    }
    assert_eq!(interpret(question, Some("maybe"), None), None);
    // A tap on another question's button is not an answer to this one.
    assert_eq!(interpret(question, Some("Yes"), Some("cp:other:low")), None);
}

#[test]
fn numbers_dates_and_patterns_are_checked() {
    let world = World::new();
    let units = &world.flow().questions[1];
    assert_eq!(interpret(units, Some("1,5"), None), Some((json!(15), 1)));
    assert_eq!(interpret(units, Some("12.5"), None), Some((json!(12.5), 1)));
    assert_eq!(interpret(units, Some("70"), None), None, "above max");
    assert_eq!(interpret(units, Some("none"), None), None);
    let city = &world.flow().questions[2];
    assert_eq!(interpret(city, Some("Pune 411001"), None), None, "the pattern refuses digits");
    let date = QuestionSpec { kind: QuestionKind::Date, field: "visit".into(), ..QuestionSpec::default() };
    assert_eq!(interpret(&date, Some("05/12/2026"), None), Some((json!("2026-12-05"), 0)));
    assert_eq!(interpret(&date, Some("2026-12-05"), None), Some((json!("2026-12-05"), 0)));
    assert_eq!(interpret(&date, Some("next week"), None), None);
}

#[test]
fn asking_for_a_person_hands_over_at_once_whatever_the_case_and_accents() {
    let world = World::new();
    let state = world.start().state;
    for said in ["Talk to a HUMAN please", "i want to spéak to someone!", "Can you call me?"] {
        let step = world.text(&state, said, T0 + 1000);
        let Some(End::Handoff { reason, qualified, summary }) = &step.end else { panic!("{said}: {step:?}") };
        assert_eq!((reason.as_str(), *qualified), ("asked_for_person", false));
        assert!(summary.ends_with("Not qualified (score 0/5). Asked for a person."), "{summary}");
    }
    // Whole phrases only.
    assert!(!asks_for_person(&spec().handoff_phrases, "the humanities building"));
    assert!(!asks_for_person(&spec().handoff_phrases, "recall meeting"));
}

#[test]
fn an_invalid_answer_is_asked_again_then_handed_over_after_max_unanswered() {
    let world = World::new();
    let state = world.start().state;
    let again = world.text(&state, "what?", T0 + 1000);
    assert!(again.end.is_none());
    assert_eq!(again.state.unanswered, 1);
    assert_eq!(body(&again.say[0]), "Sorry, I did not get that.\n\nYour budget?");
    assert!(matches!(again.say[0], Say::Choices { .. }), "the buttons come again");
    let gave_up = world.text(&again.state, "hmm", T0 + 2000);
    let Some(End::Handoff { reason, .. }) = &gave_up.end else { panic!("{gave_up:?}") };
    assert_eq!(reason, "unanswered");
    // A valid answer resets the count.
    let answered = world.tap(&again.state, "cp:budget:low", "Under 10 lakh");
    assert_eq!(answered.state.unanswered, 0);
}

#[test]
fn the_flows_deadline_hands_over_and_a_stale_one_does_nothing() {
    let world = World::new();
    let state = world.start().state;
    let early = step(&world.spec, world.flow(), &state, Input::Deadline, &world.context(T0 + 599_000));
    assert!(early.ignored && early.end.is_none());
    let due = step(&world.spec, world.flow(), &state, Input::Deadline, &world.context(T0 + 600_000));
    let Some(End::Handoff { reason, .. }) = &due.end else { panic!("{due:?}") };
    assert_eq!(reason, "timeout");
    let mut ended = due.state.clone();
    ended.ended = Some("handoff".into());
    let after = step(&world.spec, world.flow(), &ended, Input::Deadline, &world.context(T0 + 700_000));
    assert!(after.ignored);
}

#[test]
fn an_unqualified_lead_is_closed_with_the_outcome() {
    let world = World::new();
    let mut state = world.start().state;
    for (text, at) in [("Under 10 lakh", 1), ("1", 2), ("Pune", 3)] {
        state = world.text(&state, text, T0 + at * 1000).state;
    }
    // score 0 + 1 + 2 = 3 < 5: the last step closed it.
    let mut replay = world.start().state;
    replay = world.text(&replay, "Under 10 lakh", T0 + 1000).state;
    replay = world.text(&replay, "1", T0 + 2000).state;
    let last = world.text(&replay, "Pune", T0 + 3000);
    assert_eq!(last.state, state);
    let Some(End::Close { reason, fields }) = &last.end else { panic!("{last:?}") };
    assert_eq!(reason, "not_qualified");
    assert_eq!(fields.get("outcome"), Some(&json!("not_qualified")));
    assert!(last.say.is_empty());
    assert_eq!(last.state.ended.as_deref(), Some("closed"));
}

#[test]
fn nurture_sends_its_templates_only_inside_the_free_entry_window() {
    let mut world = World::new();
    world.spec.flows[0].unqualified = Unqualified::Nurture;
    world.spec.flows[0].nurture_templates =
        vec![TemplateRequest { name: "spring_brochure".into(), language: "en".into(), params: vec![] }];
    check(&world.spec, &world.schema).unwrap();
    let run = |world: &World| {
        let mut state = world.start().state;
        state = world.text(&state, "Under 10 lakh", T0 + 1000).state;
        state = world.text(&state, "1", T0 + 2000).state;
        world.text(&state, "Pune", T0 + 3000)
    };
    let inside = run(&world);
    assert!(matches!(&inside.say[..], [Say::Template(template)] if template.name == "spring_brochure"));
    assert!(matches!(&inside.end, Some(End::Close { reason, .. }) if reason == "nurtured"));
    world.free_entry_open = false;
    let outside = run(&world);
    assert!(outside.say.is_empty());
    assert!(matches!(&outside.end, Some(End::Close { reason, .. }) if reason == "not_qualified"));
}

#[test]
fn while_the_team_is_closed_it_says_when_it_opens_and_hands_over_then() {
    let mut world = World::new();
    world.spec.office_hours = OfficeHours::Wait;
    let opens = T0 + 8 * 3_600_000;
    world.opens_at = Some(opens);
    let state = world.start().state;
    let asked = world.text(&state, "talk to a human", T0 + 1000);
    assert!(asked.end.is_none());
    assert_eq!(asked.state.waiting.as_deref(), Some("asked_for_person"));
    assert_eq!(asked.deadline, Some(opens));
    assert_eq!(
        body(&asked.say[0]),
        "Thank you! Our team is away right now; a person will write to you when we open (Mon 09:00)."
    );
    // Messages meanwhile change nothing; the agent reads them later.
    let meanwhile = world.text(&asked.state, "hello?", T0 + 2000);
    assert!(meanwhile.ignored && meanwhile.say.is_empty());
    // Still closed: the deadline waits on.
    let early = step(&world.spec, world.flow(), &asked.state, Input::Deadline, &world.context(T0 + 3000));
    assert!(early.ignored && early.end.is_none());
    world.opens_at = None;
    let opened = step(&world.spec, world.flow(), &asked.state, Input::Deadline, &world.context(opens));
    let Some(End::Handoff { reason, .. }) = &opened.end else { panic!("{opened:?}") };
    assert_eq!(reason, "asked_for_person", "the hand-over keeps its reason");
    // With `queue` (the default) it hands over at once even while closed.
    world.spec.office_hours = OfficeHours::Queue;
    world.opens_at = Some(opens);
    let queued = world.text(&state, "talk to a human", T0 + 1000);
    assert!(matches!(&queued.end, Some(End::Handoff { .. })));
}

#[test]
fn more_than_three_options_are_a_list() {
    let mut world = World::new();
    let cities: Vec<Value> = ["Pune", "Mumbai", "Delhi", "Chennai"]
        .iter()
        .map(|city| json!({"id": city.to_lowercase(), "title": city}))
        .collect();
    world.spec.flows[0].questions[2] = serde_json::from_value(json!({
        "id": "city", "text": "Which city?", "field": "city", "kind": "options", "options": cities, "list_button": "Cities",
    }))
    .unwrap();
    check(&world.spec, &world.schema).unwrap();
    let Say::Choices { body, choices, list_button } = &ask(world.flow(), 2, None)[0] else { panic!() };
    let request = protocol::graph::SendMessageRequest::interactive("1", body, choices, list_button);
    let interactive = request.interactive.unwrap();
    assert_eq!(interactive.kind, "list");
    assert_eq!(interactive.action.button.as_deref(), Some("Cities"));
    assert_eq!(interactive.action.sections.unwrap()[0].rows.len(), 4);
}

#[test]
fn configuration_errors_name_the_key() {
    let schema = schema();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/flows/0/questions/0/field", json!("colour"), "flows[0].questions[0].field"),
        ("/flows/0/questions/1/kind", json!("date"), "flows[0].questions[1].kind"),
        ("/flows/0/questions/0/options/0/value", json!("cheap"), "flows[0].questions[0].options[0].value"),
        (
            "/flows/0/questions/0/options/1/title",
            json!("A title longer than twenty"),
            "flows[0].questions[0].options[1].title",
        ),
        ("/flows/0/questions/2/pattern", json!("(["), "flows[0].questions[2].pattern"),
        ("/flows/0/questions/2/id", json!("budget"), "flows[0].questions[2].id"),
        ("/flows/0/sources", json!(["tv"]), "flows[0].sources"),
        ("/flows/0/not_qualified_fields", json!({}), "flows[0].not_qualified_fields"),
        ("/flows/1/id", json!("ads"), "flows[1].id"),
        ("/flows/0/max_unanswered", json!(0), "flows[0].max_unanswered"),
    ];
    for (pointer, value, key) in cases {
        let mut raw = serde_json::to_value(spec()).unwrap();
        *raw.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
        let broken: CopilotSpec = serde_json::from_value(raw).unwrap();
        let (got, problem) = check(&broken, &schema).unwrap_err();
        assert_eq!(got, key, "{pointer}: {problem}");
    }
}

#[test]
fn a_models_answer_outside_the_flow_falls_back_to_the_built_in_result() {
    let world = World::new();
    let budget = &world.flow().questions[0];
    let interpretation = |action: Action, fields: Value| Interpretation {
        action,
        fields: serde_json::from_value(fields).unwrap(),
        tokens: 10,
    };
    // Garbage: another field, a value not offered, two fields, fields with a hand-over.
    for garbage in [
        interpretation(Action::Answer, json!({"outcome": "won"})),
        interpretation(Action::Answer, json!({"budget": "a billion"})),
        interpretation(Action::Answer, json!({"budget": ">20L", "outcome": "won"})),
        interpretation(Action::Answer, json!({})),
        interpretation(Action::Handoff, json!({"outcome": "won"})),
        interpretation(Action::Answer, json!({"budget": {"nested": true}})),
    ] {
        assert_eq!(check_interpretation(budget, &garbage), None, "{garbage:?}");
    }
    // A good one becomes the option's reply.
    let good = interpretation(Action::Answer, json!({"budget": ">20L"}));
    let checked = check_interpretation(budget, &good).unwrap();
    assert_eq!(checked, ModelInput::Reply("cp:budget:high".into()));
    let state = world.start().state;
    let input = Input::Message { text: Some("we can spend a lot"), reply_id: None, model: Some(&checked) };
    let taken = step(&world.spec, world.flow(), &state, input, &world.context(T0 + 1000));
    assert_eq!(taken.fields.get("budget"), Some(&json!(">20L")));
    // Without a usable reading the built-in result (ask again) stands.
    let input = Input::Message { text: Some("we can spend a lot"), reply_id: None, model: None };
    let fallback = step(&world.spec, world.flow(), &state, input, &world.context(T0 + 1000));
    assert_eq!(fallback.state.unanswered, 1);
    // A number question takes only a number in bounds.
    let units = &world.flow().questions[1];
    assert_eq!(check_interpretation(units, &interpretation(Action::Answer, json!({"units": 500}))), None);
    assert_eq!(
        check_interpretation(units, &interpretation(Action::Answer, json!({"units": 5}))),
        Some(ModelInput::Text("5".into()))
    );
    assert_eq!(check_interpretation(units, &interpretation(Action::Handoff, json!({}))), Some(ModelInput::Handoff));
}

#[test]
fn text_is_normalized_without_accents_case_or_punctuation() {
    assert_eq!(normalize("  Spéak—to   SOMEONE!! "), "speak to someone");
    assert_eq!(normalize("Ça va?"), "ca va");
}
