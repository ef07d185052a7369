//! The generated routing configuration and first messages, deterministic from
//! a seed. Every rule's id names its kind (`r042_text_regex`), so a decision's
//! route says which kind of rule placed it.
//!
//! First messages are made in two ways: aimed at one rule (a neutral message,
//! then that rule's conditions made true: its words put in the text, its ad
//! id as the source, its attribute on the contact…), or neutral (nothing any
//! rule looks for, so every rule is tried and the number's default team gets
//! it). An aimed message may be taken by an earlier rule that happens to hold
//! too, as in real traffic.

use std::collections::BTreeMap;

use actors::routing::{ContactFacts, Facts, NumberSpec, OwnerPolicy, RoutingSpec, RuleSpec, Trigger};
use actors::settings::{AgentSpec, TeamSpec};
use protocol::model::{Source, SourceKind};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// The two WhatsApp numbers: a sales line and a service line.
pub const NUMBERS: [&str; 2] = ["109876543210", "109876543211"];

/// Served by the city teams, three each; the 30 named first.
const CITIES: [&str; 30] = [
    "Pune",
    "Pimpri Chinchwad",
    "Satara",
    "Mumbai",
    "Navi Mumbai",
    "Thane",
    "Nashik",
    "Aurangabad",
    "Kolhapur",
    "Bengaluru",
    "Mysuru",
    "Hubballi",
    "Chennai",
    "Coimbatore",
    "Madurai",
    "Hyderabad",
    "Warangal",
    "Vijayawada",
    "Ahmedabad",
    "Surat",
    "Vadodara",
    "Jaipur",
    "Udaipur",
    "Indore",
    "Lucknow",
    "Kanpur",
    "New Delhi",
    "Gurugram",
    "Noida",
    "Kolkata",
];

/// Named in messages, served by no team: the city scan runs to its end.
const UNSERVED_CITIES: [&str; 6] = ["Patna", "Ranchi", "Guwahati", "Raipur", "Dehradun", "Shimla"];

/// What `text_any` rules look for: words and phrases of a two-wheeler loan business.
const KEYWORDS: [&str; 60] = [
    "refund",
    "money back",
    "emi",
    "foreclosure",
    "noc",
    "insurance",
    "test ride",
    "down payment",
    "interest rate",
    "loan status",
    "kyc",
    "documents",
    "bounce",
    "late fee",
    "statement",
    "cancel",
    "complaint",
    "exchange offer",
    "service centre",
    "road tax",
    "rc transfer",
    "pan card",
    "aadhaar",
    "salary slip",
    "credit score",
    "cibil",
    "top up",
    "part payment",
    "prepayment",
    "overdue",
    "penalty",
    "settlement",
    "warranty",
    "accessories",
    "booking amount",
    "delivery date",
    "battery",
    "charging",
    "subsidy",
    "electric",
    "mileage",
    "colour",
    "on road price",
    "quotation",
    "showroom",
    "finance",
    "tenure",
    "processing fee",
    "pre approved",
    "disbursal",
    "sanction letter",
    "mandate",
    "nach",
    "cheque",
    "auto debit",
    "moratorium",
    "recovery agent",
    "legal notice",
    "helmet",
    "zero cost",
];

/// The rest of a message: none of these is a keyword's word, and none has a digit.
const FILLER: [&str; 96] = [
    "hi",
    "hello",
    "hey",
    "good",
    "morning",
    "afternoon",
    "evening",
    "please",
    "i",
    "want",
    "would",
    "like",
    "to",
    "know",
    "ask",
    "about",
    "the",
    "my",
    "is",
    "are",
    "can",
    "you",
    "tell",
    "me",
    "what",
    "when",
    "where",
    "why",
    "thanks",
    "thank",
    "sir",
    "madam",
    "ji",
    "regarding",
    "details",
    "today",
    "tomorrow",
    "need",
    "help",
    "with",
    "this",
    "that",
    "one",
    "a",
    "an",
    "for",
    "and",
    "or",
    "it",
    "will",
    "be",
    "there",
    "any",
    "how",
    "much",
    "did",
    "not",
    "get",
    "yet",
    "still",
    "waiting",
    "call",
    "kindly",
    "urgent",
    "share",
    "send",
    "reply",
    "quickly",
    "already",
    "spoke",
    "someone",
    "yesterday",
    "last",
    "week",
    "friend",
    "told",
    "brother",
    "father",
    "scooter",
    "bike",
    "new",
    "model",
    "family",
    "looking",
    "buy",
    "purchase",
    "plan",
    "month",
    "your",
    "team",
    "info",
    "update",
    "we",
    "our",
    "from",
    "since",
];

/// `text_regex` rules (RE2 syntax) and a text each matches. Every one needs
/// digits, which neutral messages never have.
type Example = fn(&mut StdRng) -> String;
const REGEXES: [(&str, Example); 12] = [
    (r"(?i)\border\s*#?\s*\d{5,8}\b", |rng| format!("order #{}", digits(rng, 6))),
    (r"(?i)\bLN\d{8}\b", |rng| format!("LN{}", digits(rng, 8))),
    (r"(?i)\b[A-Z]{5}[0-9]{4}[A-Z]\b", |rng| format!("{}{}{}", letters(rng, 5), digits(rng, 4), letters(rng, 1))),
    (r"(?i)\b(?:MH|KA|DL|TN|GJ)[ -]?\d{2}[ -]?[A-Z]{1,2}[ -]?\d{4}\b", |rng| {
        format!("MH{} {} {}", digits(rng, 2), letters(rng, 2), digits(rng, 4))
    }),
    (r"(?i)\binvoice\s*(?:no\.?|number|#)?\s*\d{4,}", |rng| format!("invoice no {}", digits(rng, 5))),
    (r"(?i)\bticket\s*#?\s*\d{6,}", |rng| format!("ticket #{}", digits(rng, 7))),
    (r"(?i)\b(?:utr|upi ref)\s*:?\s*\d{12}\b", |rng| format!("UTR {}", digits(rng, 12))),
    (r"(?i)\bapp(?:lication)?\s*(?:id|no)\s*:?\s*[A-Z]{2}\d{6}\b", |rng| {
        format!("application id {}{}", letters(rng, 2), digits(rng, 6))
    }),
    (r"(?i)\bemi\s+(?:of|for)\s+(?:rs\.?\s*)?\d{3,6}\b", |rng| format!("emi of rs {}", digits(rng, 4))),
    (r"\b[1-9]\d{5}\b", |rng| format!("pincode {}{}", rng.random_range(1..10), digits(rng, 5))),
    (r"(?i)\bchassis\s*(?:no\.?|number)?\s*:?\s*[A-HJ-NPR-Z0-9]{17}\b", |rng| {
        format!("chassis no MA{}{}", digits(rng, 8), "BCDEFGH")
    }),
    (r"(?i)(?:rs\.?|inr|₹)\s*\d{1,3}(?:,\d{2,3})*(?:\.\d{2})?\s*(?:paid|debited|deducted)\b", |rng| {
        format!("rs {},{} debited", rng.random_range(1..100), digits(rng, 3))
    }),
];

fn digits(rng: &mut StdRng, count: usize) -> String {
    (0..count).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

fn letters(rng: &mut StdRng, count: usize) -> String {
    (0..count).map(|_| char::from(b'A' + rng.random_range(0..26u8))).collect()
}

/// Contact attributes rules test, with the values rules name and values
/// only neutral contacts have.
const ATTRIBUTES: [(&str, &[&str], &[&str]); 4] = [
    ("tier", &["gold", "platinum", "diamond"], &["silver", "standard"]),
    ("segment", &["fleet", "corporate", "gig_worker", "student", "retail"], &["salaried", "self_employed"]),
    ("language", &["marathi", "tamil", "telugu", "kannada", "gujarati"], &["hindi", "english"]),
    ("region", &["west", "south", "north", "east"], &["central"]),
];

/// Referral codes rules name (each with the rule's number appended).
const CODES: [&str; 6] = ["DIWALI", "MONSOON", "FESTIVE", "SHOWROOM", "CAMPUS", "FRIEND"];

/// The kinds of rule, in the shares of a 100-rule configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    TextAny,
    TextRegex,
    InteractiveIds,
    AdSource,
    ReferralCode,
    ContactAttribute,
    Number,
    CityInText,
    DealerTeam,
    ToAgent,
}

impl Kind {
    pub const ALL: [(Kind, usize); 10] = [
        (Kind::TextAny, 30),
        (Kind::TextRegex, 12),
        (Kind::InteractiveIds, 8),
        (Kind::AdSource, 10),
        (Kind::ReferralCode, 8),
        (Kind::ContactAttribute, 10),
        (Kind::Number, 4),
        (Kind::CityInText, 6),
        (Kind::DealerTeam, 6),
        (Kind::ToAgent, 6),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::TextAny => "text_any",
            Kind::TextRegex => "text_regex",
            Kind::InteractiveIds => "interactive_ids",
            Kind::AdSource => "source_ids",
            Kind::ReferralCode => "referral_codes",
            Kind::ContactAttribute => "contact",
            Kind::Number => "number",
            Kind::CityInText => "city_in_text",
            Kind::DealerTeam => "to_dealer_team",
            Kind::ToAgent => "to_agent",
        }
    }

    /// The kind of the rule with this id.
    pub fn of_rule(id: &str) -> Option<Kind> {
        let name = id.split_once('_')?.1;
        Kind::ALL.iter().map(|(kind, _)| *kind).find(|kind| kind.name() == name)
    }
}

/// Sizes of the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub agents: usize,
    pub teams: usize,
    pub rules: usize,
}

/// Everything `RoutingTable::new` takes.
pub struct Configuration {
    pub spec: RoutingSpec,
    pub teams: Vec<TeamSpec>,
    pub agents: Vec<AgentSpec>,
    pub numbers: Vec<NumberSpec>,
    /// Ad ids some rule names, and codes.
    ad_ids: Vec<String>,
}

impl Configuration {
    /// The routing table of this configuration (the tests' one way to build
    /// it; the benchmark times `RoutingTable::new` itself).
    #[cfg(test)]
    fn table(&self) -> Result<actors::routing::RoutingTable, actors::routing::RoutingError> {
        actors::routing::RoutingTable::new(self.spec.clone(), &self.teams, &self.agents, &self.numbers)
    }

    pub fn generate(scale: Scale, rng: &mut StdRng) -> Configuration {
        assert!(scale.teams >= 4 && scale.agents >= scale.teams, "at least 4 teams and one agent per team");
        // A fifth of the teams serve cities (three each), the next fifth are dealers.
        let city_teams = (scale.teams / 5).clamp(1, CITIES.len() / 3);
        let dealer_teams = (scale.teams / 5).clamp(1, scale.teams - city_teams - 1);
        let teams: Vec<TeamSpec> = (0..scale.teams)
            .map(|index| TeamSpec {
                id: format!("team_{index:02}"),
                cities: if index < city_teams {
                    CITIES[index * 3..index * 3 + 3].iter().map(|city| (*city).to_owned()).collect()
                } else {
                    Vec::new()
                },
                dealer: (city_teams..city_teams + dealer_teams)
                    .contains(&index)
                    .then(|| format!("D{}", 101 + index - city_teams)),
                ..TeamSpec::default()
            })
            .collect();
        let agents: Vec<AgentSpec> = (0..scale.agents)
            .map(|index| {
                let mut agent_teams = vec![teams[index % scale.teams].id.clone()];
                // One agent in ten also works for the next team.
                if index % 10 == 9 {
                    agent_teams.push(teams[(index + 1) % scale.teams].id.clone());
                }
                AgentSpec {
                    id: format!("agent_{index:03}"),
                    name: None,
                    role: protocol::model::Role::Agent,
                    token: None,
                    token_sha256: None,
                    teams: agent_teams,
                    capacity: None,
                    city: None,
                    manages: Vec::new(),
                    shift: None,
                    copilot: None,
                }
            })
            .collect();
        let plain_team = city_teams + dealer_teams;
        let numbers = NUMBERS
            .iter()
            .enumerate()
            .map(|(index, number)| NumberSpec {
                phone_number_id: (*number).to_owned(),
                name: None,
                default_team: Some(teams[(plain_team + index) % scale.teams].id.clone()),
            })
            .collect();

        // Each kind's share of the rules, in a seeded order, so every kind
        // has early and late rules.
        let mut kinds: Vec<Kind> = Vec::with_capacity(scale.rules);
        for (kind, per_hundred) in Kind::ALL {
            let count = (per_hundred * scale.rules).div_ceil(100).max(1);
            kinds.extend(std::iter::repeat_n(kind, count));
        }
        kinds.shuffle(rng);
        kinds.truncate(scale.rules);
        let mut ad_ids = Vec::new();
        let mut seen = BTreeMap::<Kind, usize>::new();
        let rules = kinds
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let nth = seen.entry(*kind).or_default();
                let rule = make_rule(*kind, index, *nth, &teams, &agents, &mut ad_ids, rng);
                *nth += 1;
                rule
            })
            .collect();
        Configuration {
            spec: RoutingSpec { owner_policy: OwnerPolicy::LastCloser, owner_wait_s: 60, rules },
            teams,
            agents,
            numbers,
            ad_ids,
        }
    }

    pub fn cities(&self) -> Vec<&str> {
        self.teams.iter().flat_map(|team| team.cities.iter().map(String::as_str)).collect()
    }

    pub fn dealers(&self) -> Vec<&str> {
        self.teams.iter().filter_map(|team| team.dealer.as_deref()).collect()
    }
}

fn pick_keywords(rng: &mut StdRng, low: usize, high: usize) -> Vec<String> {
    let count = rng.random_range(low..=high);
    KEYWORDS.choose_multiple(rng, count).map(|keyword| (*keyword).to_owned()).collect()
}

fn pick_ad_ids(index: usize, rng: &mut StdRng, ad_ids: &mut Vec<String>) -> Vec<String> {
    let ids: Vec<String> =
        (0..rng.random_range(2..=3)).map(|nth| format!("120000{index:03}{:06}", nth * 7919 + 11)).collect();
    ad_ids.extend(ids.iter().cloned());
    ids
}

fn random_team(teams: &[TeamSpec], rng: &mut StdRng) -> Option<String> {
    teams.choose(rng).map(|team| team.id.clone())
}

fn make_rule(
    kind: Kind,
    index: usize,
    nth: usize,
    teams: &[TeamSpec],
    agents: &[AgentSpec],
    ad_ids: &mut Vec<String>,
    rng: &mut StdRng,
) -> RuleSpec {
    let mut rule = RuleSpec {
        id: format!("r{index:03}_{}", kind.name()),
        owner_first: !rng.random_bool(0.2),
        owner_wait_s: *[0, 30, 120].choose(rng).unwrap_or(&0),
        ..RuleSpec::default()
    };
    let string = |text: &str| Value::String(text.to_owned());
    match kind {
        Kind::TextAny => {
            rule.text_any = pick_keywords(rng, 2, 4);
            rule.to_team = random_team(teams, rng);
        }
        Kind::TextRegex => {
            rule.text_regex = Some(REGEXES[nth % REGEXES.len()].0.to_owned());
            rule.to_team = random_team(teams, rng);
        }
        Kind::InteractiveIds => {
            rule.interactive_ids = vec![format!("menu_{index}_a"), format!("menu_{index}_b"), format!("list_{index}")];
            rule.to_team = random_team(teams, rng);
        }
        Kind::AdSource => {
            if nth.is_multiple_of(2) {
                rule.source = Some(SourceKind::Paid);
            }
            rule.source_ids = pick_ad_ids(index, rng, ad_ids);
            rule.to_team = random_team(teams, rng);
        }
        Kind::ReferralCode => {
            if nth.is_multiple_of(2) {
                rule.source = Some(SourceKind::Referral);
            }
            rule.referral_codes = (0..rng.random_range(1..=3))
                .map(|_| format!("{}{index}", CODES.choose(rng).unwrap_or(&"CODE")))
                .collect();
            rule.to_team = random_team(teams, rng);
        }
        Kind::ContactAttribute => {
            let count = rng.random_range(1..=2);
            for (key, values, _) in ATTRIBUTES.choose_multiple(rng, count) {
                rule.contact.insert((*key).to_owned(), string(values.choose(rng).unwrap_or(&"")));
            }
            // One in three also on a number: loans taken (a number in the rule).
            if nth.is_multiple_of(3) {
                rule.contact.insert("loan_count".into(), Value::from(rng.random_range(2..5)));
            }
            rule.to_team = random_team(teams, rng);
        }
        Kind::Number => {
            rule.number = Some(NUMBERS[1].to_owned());
            if nth.is_multiple_of(2) {
                rule.text_any = pick_keywords(rng, 1, 2);
            } else {
                rule.interactive_ids = vec![format!("service_{index}")];
            }
            rule.to_team = random_team(teams, rng);
        }
        Kind::CityInText => {
            rule.city_in_text = true;
            match nth % 3 {
                0 => {
                    rule.text_any = pick_keywords(rng, 2, 3);
                    rule.to_city_team = true;
                }
                1 => {
                    rule.source = Some(SourceKind::Paid);
                    rule.to_city_team = true;
                }
                _ => {
                    let served: Vec<&String> = teams.iter().flat_map(|team| &team.cities).collect();
                    let city = served.choose(rng).map_or("Pune", |city| city.as_str());
                    rule.contact.insert("city".into(), string(city));
                    rule.to_team = random_team(teams, rng);
                }
            }
        }
        Kind::DealerTeam => {
            rule.to_dealer_team = true;
            match nth % 4 {
                0 => rule.text_any = pick_keywords(rng, 2, 3),
                1 => rule.source_ids = pick_ad_ids(index, rng, ad_ids),
                2 => {
                    rule.contact.insert("segment".into(), string("retail"));
                }
                // No condition: any contact of a known dealer.
                _ => {}
            }
        }
        Kind::ToAgent => {
            rule.to_agent = agents.choose(rng).map(|agent| agent.id.clone());
            match nth % 3 {
                0 => {
                    rule.contact.insert("tier".into(), string("platinum"));
                    rule.contact.insert("segment".into(), string("corporate"));
                }
                1 => rule.referral_codes = vec![format!("PARTNER{index}")],
                _ => rule.text_any = pick_keywords(rng, 1, 2),
            }
        }
    }
    rule
}

/// One first message with everything routing looks at, owned.
#[derive(Clone, Debug)]
pub struct Sample {
    pub number: &'static str,
    pub text: Option<String>,
    pub interactive_id: Option<String>,
    pub source: Source,
    pub contact: ContactFacts,
    pub last_closer: Option<String>,
}

impl Sample {
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            trigger: Trigger::Open,
            phone_number_id: self.number,
            text: self.text.as_deref(),
            interactive_id: self.interactive_id.as_deref(),
            source: &self.source,
            contact: &self.contact,
            last_closer: self.last_closer.as_deref(),
        }
    }
}

/// Makes first messages for one configuration.
pub struct Generator<'a> {
    configuration: &'a Configuration,
    filler: Vec<&'static str>,
}

impl<'a> Generator<'a> {
    pub fn new(configuration: &'a Configuration) -> Generator<'a> {
        // Belt and braces: no filler word is any keyword's or city's word.
        let taken: Vec<String> = KEYWORDS
            .iter()
            .chain(CITIES.iter())
            .chain(UNSERVED_CITIES.iter())
            .flat_map(|phrase| phrase.split(' ').map(str::to_lowercase))
            .collect();
        let filler = FILLER.iter().copied().filter(|word| !taken.iter().any(|taken| taken == word)).collect();
        Generator { configuration, filler }
    }

    /// `low..=high` filler words, each a random one.
    fn filler_words(&self, rng: &mut StdRng, low: usize, high: usize) -> Vec<String> {
        let count = rng.random_range(low..=high);
        (0..count).map(|_| (*self.filler.choose(rng).unwrap_or(&"hi")).to_owned()).collect()
    }

    /// A message no rule takes: filler text (sometimes naming a city no team
    /// serves, sometimes a `ref:` code no rule names), a source no rule
    /// names, a contact with none of the attribute values rules name and no
    /// known dealer; an owner or last closer as often as in aimed messages.
    pub fn neutral(&self, rng: &mut StdRng) -> (Sample, Vec<String>) {
        let mut words = self.filler_words(rng, 3, 26);
        let mut source = Source::organic();
        let roll = rng.random_range(0..100);
        if roll < 30 {
            source.kind = SourceKind::Paid;
            source.source_type = Some("ad".into());
            source.source_id = Some(format!("99{}", digits(rng, 13)));
            source.ctwa_clid = Some(letters(rng, 24));
            source.headline = Some("Own your scooter at zero down".into());
        } else if roll < 40 {
            let code = format!("NOPE{}", letters(rng, 3));
            words.push(format!("ref:{code}"));
            source.kind = SourceKind::Referral;
            source.code = Some(code);
        }
        if rng.random_bool(0.2) {
            let city = (*UNSERVED_CITIES.choose(rng).unwrap_or(&"Patna")).to_owned();
            insert_anywhere(&mut words, city, rng);
        }
        let mut attributes = Map::new();
        for (key, _, neutral_values) in ATTRIBUTES {
            if rng.random_bool(0.5) {
                attributes.insert(key.to_owned(), Value::String((*neutral_values.choose(rng).unwrap_or(&"")).into()));
            }
        }
        if rng.random_bool(0.5) {
            attributes.insert("loan_count".into(), Value::from(rng.random_range(0..2)));
        }
        let region = attributes.remove("region").and_then(|value| value.as_str().map(str::to_owned));
        let agents = &self.configuration.agents;
        let contact = ContactFacts {
            city: rng.random_bool(0.3).then(|| (*UNSERVED_CITIES.choose(rng).unwrap_or(&"Patna")).to_owned()),
            region,
            dealer: rng.random_bool(0.2).then(|| format!("D9{}", digits(rng, 2))),
            owner: rng.random_bool(0.1).then(|| agents[rng.random_range(0..agents.len())].id.clone()),
            attributes,
        };
        let last_closer = rng.random_bool(0.25).then(|| agents[rng.random_range(0..agents.len())].id.clone());
        let sample = Sample {
            number: NUMBERS[rng.random_range(0..NUMBERS.len())],
            text: None,
            interactive_id: None,
            source,
            contact,
            last_closer,
        };
        (sample, words)
    }

    /// A neutral message, finished.
    pub fn no_match(&self, rng: &mut StdRng) -> Sample {
        let (mut sample, mut words) = self.neutral(rng);
        // One in ten a button reply no rule asks for.
        if rng.random_bool(0.1) {
            sample.interactive_id = Some(format!("menu_unknown_{}", digits(rng, 2)));
            words = self.filler_words(rng, 2, 4);
        }
        sample.text = Some(sentence(words, rng));
        sample
    }

    /// A neutral message with `rule`'s conditions made true.
    pub fn aimed_at(&self, rule: &RuleSpec, rng: &mut StdRng) -> Sample {
        let (mut sample, mut words) = self.neutral(rng);
        if let Some(number) = &rule.number {
            sample.number = NUMBERS.iter().find(|known| *known == number).copied().unwrap_or(NUMBERS[0]);
        }
        if let Some(phrase) = rule.text_any.choose(rng) {
            insert_anywhere(&mut words, phrase.clone(), rng);
        }
        if let Some(pattern) = &rule.text_regex
            && let Some((_, example)) = REGEXES.iter().find(|(known, _)| known == pattern)
        {
            let text = example(rng);
            insert_anywhere(&mut words, text, rng);
        }
        if let Some(id) = rule.interactive_ids.choose(rng) {
            sample.interactive_id = Some(id.clone());
            // A button reply's text is its title.
            words = self.filler_words(rng, 2, 4);
        }
        let wants_ad = rule.source == Some(SourceKind::Paid) || !rule.source_ids.is_empty();
        let wants_code = rule.source == Some(SourceKind::Referral) || !rule.referral_codes.is_empty();
        if wants_ad {
            let ad_id = rule.source_ids.choose(rng).cloned().unwrap_or_else(|| {
                self.configuration.ad_ids.choose(rng).cloned().unwrap_or_else(|| "120000000000001".into())
            });
            sample.source = Source {
                kind: SourceKind::Paid,
                source_type: Some("ad".into()),
                source_id: Some(ad_id),
                ctwa_clid: Some(letters(rng, 24)),
                headline: Some("Own your scooter at zero down".into()),
                code: None,
            };
        } else if wants_code {
            let code = rule.referral_codes.choose(rng).cloned().unwrap_or_else(|| format!("WALKIN{}", digits(rng, 2)));
            words.retain(|word| !word.starts_with("ref:"));
            words.push(format!("ref:{code}"));
            sample.source = Source { code: Some(code), ..Source::organic() };
            sample.source.kind = SourceKind::Referral;
        } else if rule.source == Some(SourceKind::Organic) {
            sample.source = Source::organic();
        }
        for (key, value) in &rule.contact {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            match key.as_str() {
                "city" => sample.contact.city = Some(text),
                "region" => sample.contact.region = Some(text),
                "dealer" => sample.contact.dealer = Some(text),
                _ => {
                    sample.contact.attributes.insert(key.clone(), value.clone());
                }
            }
        }
        let served = self.configuration.cities();
        if rule.city_in_text {
            // The city the rule wants, else any served one, named in the text.
            let city = rule
                .contact
                .get("city")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| (*served.choose(rng).unwrap_or(&"Pune")).to_owned());
            insert_anywhere(&mut words, city, rng);
        } else if rule.to_city_team {
            sample.contact.city = served.choose(rng).map(|city| (*city).to_owned());
        }
        if rule.to_dealer_team {
            sample.contact.dealer = self.configuration.dealers().choose(rng).map(|dealer| (*dealer).to_owned());
        }
        sample.text = Some(sentence(words, rng));
        sample
    }

    /// The mixed workload: `aimed_percent` of messages aimed at a rule drawn
    /// evenly from all of them, the rest neutral.
    pub fn mixed(&self, count: usize, aimed_percent: u32, rng: &mut StdRng) -> Vec<Sample> {
        let rules = &self.configuration.spec.rules;
        (0..count)
            .map(|_| match rules.choose(rng) {
                Some(rule) if rng.random_range(0..100) < aimed_percent => self.aimed_at(rule, rng),
                _ => self.no_match(rng),
            })
            .collect()
    }
}

fn insert_anywhere(words: &mut Vec<String>, text: String, rng: &mut StdRng) {
    let at = rng.random_range(0..=words.len());
    words.insert(at, text);
}

/// Words joined as someone would type them: a capital, a comma or two, an end mark.
fn sentence(words: Vec<String>, rng: &mut StdRng) -> String {
    let mut text = String::with_capacity(words.iter().map(|word| word.len() + 2).sum());
    for (index, word) in words.iter().enumerate() {
        if index > 0 {
            text.push_str(if rng.random_bool(0.08) { ", " } else { " " });
        }
        if index == 0 {
            let mut characters = word.chars();
            if let Some(first) = characters.next() {
                text.extend(first.to_uppercase());
                text.push_str(characters.as_str());
            }
        } else {
            text.push_str(word);
        }
    }
    text.push_str(["", ".", "?", "!", " pls"].choose(rng).unwrap_or(&""));
    text
}

pub fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::routing::route;
    use protocol::model::RouteReason;
    use std::collections::BTreeSet;

    const SCALE: Scale = Scale { agents: 500, teams: 50, rules: 100 };

    #[test]
    fn the_configuration_is_valid_at_the_issues_scale() {
        let mut rng = seeded(7);
        let configuration = Configuration::generate(SCALE, &mut rng);
        assert_eq!(configuration.spec.rules.len(), 100);
        assert_eq!(configuration.teams.len(), 50);
        assert_eq!(configuration.agents.len(), 500);
        assert_eq!(configuration.cities().len(), 30);
        assert_eq!(configuration.dealers().len(), 10);
        let regexes = configuration.spec.rules.iter().filter(|rule| rule.text_regex.is_some()).count();
        assert_eq!(regexes, 12);
        let table = configuration.table();
        assert!(table.is_ok(), "{:?}", table.err());
    }

    #[test]
    fn the_mixed_workload_reaches_every_kind_of_rule_and_no_rule() {
        let mut rng = seeded(7);
        let configuration = Configuration::generate(SCALE, &mut rng);
        let table = configuration.table().expect("valid");
        let generator = Generator::new(&configuration);
        let samples = generator.mixed(20_000, 75, &mut rng);
        let mut kinds = BTreeSet::new();
        let mut reasons = BTreeSet::new();
        let mut unmatched = 0;
        for sample in &samples {
            let routing = route(&sample.facts(), &table);
            reasons.insert(format!("{:?}", routing.route.reason));
            // The owner's or last closer's offer, before the team.
            if let Some(agent) = &routing.agent {
                reasons.insert(format!("{:?}", agent.route.reason));
            }
            match routing.route.rule.as_deref() {
                Some(rule) => {
                    kinds.insert(Kind::of_rule(rule).expect("a generated rule id"));
                }
                None => unmatched += 1,
            }
        }
        let all: BTreeSet<Kind> = Kind::ALL.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds, all, "every kind of rule places some messages");
        assert!(unmatched > samples.len() / 10, "{unmatched} of {} matched no rule", samples.len());
        for reason in ["Rule", "Owner", "Returning", "Default"] {
            assert!(reasons.contains(reason), "{reason} missing from {reasons:?}");
        }
    }

    #[test]
    fn neutral_messages_match_no_rule() {
        let mut rng = seeded(11);
        let configuration = Configuration::generate(SCALE, &mut rng);
        let table = configuration.table().expect("valid");
        let generator = Generator::new(&configuration);
        for _ in 0..5_000 {
            let sample = generator.no_match(&mut rng);
            let routing = route(&sample.facts(), &table);
            assert_eq!(routing.route.rule, None, "{sample:?}");
            assert_ne!(routing.route.reason, RouteReason::Rule);
        }
    }

    #[test]
    fn every_regex_matches_its_example_and_no_filler() {
        let mut rng = seeded(3);
        for (pattern, example) in REGEXES {
            let regex = regex::Regex::new(pattern).expect("compiles");
            let text = example(&mut rng);
            assert!(regex.is_match(&text), "{pattern} vs {text:?}");
            assert!(!regex.is_match(&FILLER.join(" ")), "{pattern} matches filler");
        }
    }
}
