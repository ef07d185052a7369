//! `switchboard demo`: the newcomer's first run (contract §1).
//!
//! One process runs the engine, the built-in WhatsApp Cloud API emulator
//! ([`sim::emulator`]), a pool of simulated customers who write in through
//! signed webhooks, and simulated agents who work their inbox over the
//! WebSocket protocol exactly as a real agent UI would. A human agent `you` can
//! join from the browser inbox, and a manager token opens the dashboard.
//!
//! Everything here talks to the engine through its public surface (HTTP,
//! webhooks, WebSocket), so the demo also exercises what real clients see.
//! Network errors never stop the demo: they are logged and retried.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actors::settings::{AgentSpec, Strategy, TeamSpec};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use protocol::model::Role;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sim::agent::Message as WsMessage;
use sim::emulator::{Emulator, EmulatorConfig};
use tokio::task::JoinHandle;

use crate::config::Config;

mod copilot;
mod history;

/// The business phone number id the simulated customers write to.
const PHONE_NUMBER_ID: &str = "100000000000001";
/// The demo's teams: sales takes ad leads and whatever no rule places;
/// the others get conversations by the routing rules below.
const TEAMS: [(&str, &str, Strategy); 4] = [
    ("sales", "Sales", Strategy::RoundRobin),
    ("collections", "Collections", Strategy::LeastLoaded),
    ("support", "Support", Strategy::LeastLoaded),
    ("pune", "Pune showroom", Strategy::RoundRobin),
];

/// The demo's routing rules (docs/routing.md; a fuller example is
/// config/examples/routing.toml): what customers write decides the team.
const ROUTING: &str = r#"
[[rules]]
id = "payments"
text_any = ["emi", "payment link", "instalment", "pay"]
to_team = "collections"

[[rules]]
id = "documents"
text_any = ["documents", "brochure"]
to_team = "support"

[[rules]]
id = "city"
city_in_text = true
to_city_team = true

[[rules]]
id = "diwali_referrals"
referral_codes = ["DIWALI25"]
to_team = "sales"

[[rules]]
id = "ad_leads"
source = "paid"
to_team = "sales"
"#;
const AGENT_CAPACITY: u32 = 5;
/// Past conversations a day when the demo plays its history.
const HISTORY_PER_DAY: u32 = 30;

/// The demo's three ads, named, with what they cost over the last week
/// (to the end of today), so attribution shows the cost per closed deal.
fn campaigns(now_ms: i64) -> Vec<crate::config::CampaignSpec> {
    let day = |offset: i64| protocol::time::format_rfc3339(now_ms + offset * 86_400_000)[..10].to_owned();
    [
        ("ad-1", "Festive offer: premium plan", 21_000.0),
        ("ad-2", "Festive offer: EMI", 14_000.0),
        ("ad-3", "Brand video", 28_000.0),
    ]
    .into_iter()
    .map(|(id, name, spend)| crate::config::CampaignSpec {
        source_id: id.to_owned(),
        name: name.to_owned(),
        spend: Some(spend),
        currency: Some("INR".to_owned()),
        start: Some(day(-6)),
        end: Some(day(0)),
    })
    .collect()
}
const STATUS_EVERY: Duration = Duration::from_secs(5);

const CUSTOMER_NAMES: [&str; 50] = [
    "Aarav",
    "Priya",
    "Rohan",
    "Ananya",
    "Vikram",
    "Sneha",
    "Arjun",
    "Kavya",
    "Rahul",
    "Isha",
    "Aditya",
    "Neha",
    "Karan",
    "Pooja",
    "Siddharth",
    "Meera",
    "Amit",
    "Divya",
    "Rajesh",
    "Lakshmi",
    "Suresh",
    "Anjali",
    "Manoj",
    "Deepa",
    "Sanjay",
    "Nisha",
    "Vivek",
    "Shreya",
    "Harish",
    "Ritu",
    "Gaurav",
    "Swati",
    "Nikhil",
    "Aishwarya",
    "Varun",
    "Tanvi",
    "Prakash",
    "Kiran",
    "Abhishek",
    "Pallavi",
    "Ravi",
    "Bhavna",
    "Sunil",
    "Geeta",
    "Ashok",
    "Radha",
    "Imran",
    "Farah",
    "Harpreet",
    "Simran",
];

const AGENT_NAMES: [&str; 12] =
    ["Asha", "Bilal", "Chitra", "Dev", "Esha", "Farhan", "Gauri", "Hari", "Indu", "Jai", "Kabir", "Leela"];
const AGENT_CITIES: [&str; 6] = ["Mumbai", "Delhi", "Bengaluru", "Chennai", "Pune", "Hyderabad"];

/// First messages of customers who clicked the ad.
const AD_OPENERS: &[&str] = &[
    "Hi! I saw your festive offer ad. Can you tell me more?",
    "Hello, is the festive discount still on?",
    "Hi, I clicked on your ad. What is the price of the premium plan?",
];

/// Messages of leads and of customers with dues.
const CUSTOMER_TEXTS: &[&str] = &[
    "Hi, I want to know the price of the premium plan",
    "Can someone call me back? I'm interested in a demo",
    "Do you deliver to Pune?",
    "Can I get a quote for 10 licences?",
    "What documents do I need for the loan?",
    "I got a reminder about my EMI. Can I pay next week?",
    "I have already paid the last instalment, please check",
    "Please share the payment link",
    "Is there a discount if I pay the full amount now?",
    "Thanks! When can we talk?",
    "Okay, sounds good",
    "Can you send me the brochure?",
];

const AGENT_REPLIES: &[&str] = &[
    "Namaste! Thanks for reaching out. How can I help you today?",
    "Sure, happy to help. Could you share your city and a good time to call?",
    "Our premium plan is ₹1,500 a month, and the festive offer gives you 20% off the first 3 months.",
    "I've noted that. I'll send you the details right away.",
    "Here is your payment link: https://pay.example.com/demo — it's valid for 24 hours.",
    "Got it, thank you! I've updated your account.",
    "Would tomorrow at 11 am work for a quick demo call?",
];

const AGENT_NUDGES: &[&str] = &[
    "Just checking in: did you get a chance to look at the details?",
    "Hi again! Shall I book a slot for you?",
    "Let me know if you have any questions, I'm here to help.",
];

const OUTCOMES: &[&str] = &["demo_booked", "closed_won", "follow_up", "promise_to_pay", "not_qualified"];

/// Runs the demo until Ctrl-C or SIGTERM; returns the process exit code.
pub async fn run(listen: &str, agents: usize, rate: f64, data_dir: Option<PathBuf>, history_days: u32) -> i32 {
    if listen.parse::<SocketAddr>().is_err() {
        eprintln!("switchboard demo: --listen {listen:?} is not an address like 127.0.0.1:8080");
        return 2;
    }
    if !(rate.is_finite() && rate > 0.0) {
        eprintln!("switchboard demo: --rate must be a number of messages per second above 0, not {rate}");
        return 2;
    }
    // One tokio interval tick per message: keep the period above a microsecond.
    let rate = rate.min(10_000.0);

    let started_unix = unix_seconds();
    let data_dir = data_dir.unwrap_or_else(|| {
        // A fresh folder, even when another demo started in the same second.
        let base = format!("./data/demo-{started_unix}");
        (1..)
            .map(|n| if n == 1 { PathBuf::from(&base) } else { PathBuf::from(format!("{base}-{n}")) })
            .find(|path| !path.exists())
            .unwrap_or_else(|| PathBuf::from(&base))
    });
    let created_data_dir = !data_dir.exists();
    // The past is played only into a new (or empty) folder: its days come before anything there.
    let fresh = created_data_dir || std::fs::read_dir(&data_dir).is_ok_and(|mut entries| entries.next().is_none());
    if let Err(error) = std::fs::create_dir_all(&data_dir) {
        eprintln!("switchboard demo: cannot create the data directory {}: {error}", data_dir.display());
        return 1;
    }

    let mut config = match Config::load(None, std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("switchboard demo: {error}");
            return 1;
        }
    };
    let roster = Roster::new(agents);
    config.server.listen = listen.to_owned();
    config.server.data_dir = data_dir.clone();
    config.whatsapp.app_secret = secret();
    config.whatsapp.verify_token = secret();
    config.whatsapp.access_token = secret();
    config.presence.grace_s = 5;
    config.teams = TEAMS
        .iter()
        .map(|(id, name, assignment)| TeamSpec {
            id: (*id).to_owned(),
            name: Some((*name).to_owned()),
            assignment: *assignment,
            cities: if *id == "pune" { vec!["Pune".to_owned()] } else { Vec::new() },
            // Support spills into sales when five wait.
            overflow_to: if *id == "support" { vec!["sales".to_owned()] } else { Vec::new() },
            overflow_queue: (*id == "support").then_some(5),
            ..Default::default()
        })
        .collect();
    config.routing = match toml::from_str(ROUTING) {
        Ok(routing) => routing,
        Err(error) => {
            eprintln!("switchboard demo: the demo's routing rules do not read: {error}");
            return 1;
        }
    };
    config.agents = roster.specs();
    config.campaigns = campaigns(unix_seconds() as i64 * 1000);

    let emulator = match Emulator::start(EmulatorConfig {
        access_token: config.whatsapp.access_token.clone(),
        app_secret: config.whatsapp.app_secret.clone(),
        webhook_url: None,
        status_delay_ms: 300,
        send_statuses: true,
    })
    .await
    {
        Ok(emulator) => emulator,
        Err(error) => {
            eprintln!("switchboard demo: cannot start the WhatsApp Cloud API emulator: {error}");
            return 1;
        }
    };
    config.whatsapp.graph_base_url = emulator.base_url();
    let app_secret = config.whatsapp.app_secret.clone();

    if fresh && history_days > 0 {
        println!(
            "Playing {history_days} past days of simulated work into the new data directory (their reports fill the dashboard)…"
        );
        let cast = history::Cast {
            agents: &roster.simulated,
            manager_token: &roster.manager_token,
            phone_number_id: PHONE_NUMBER_ID,
        };
        match history::play(&config, &cast, history_days, HISTORY_PER_DAY).await {
            Ok(played) => println!(
                "  {} past conversations ({} won) played in {:.1} s.",
                played.conversations,
                played.won,
                played.took.as_secs_f64()
            ),
            Err(error) => {
                // The live demo still runs; its reports start from now.
                eprintln!("switchboard demo: the past days could not be played ({error:#}); going on without them");
            }
        }
    }

    // Paid (click-to-WhatsApp) leads send Meta's Conversions API events to
    // the emulator: QualifiedLead when assigned, Purchase when won. Set
    // after the past days are played, so only the live demo sends them.
    config.capi = Some(demo_capi());
    config.assist = demo_assist();
    // The sales team's co-pilot qualifies the live paid leads first
    // (docs/copilot.md); set after the past days, which agents answered.
    let flow = match demo_copilot(&mut config) {
        Ok(flow) => flow,
        Err(error) => {
            eprintln!("switchboard demo: the demo's co-pilot flow does not read: {error:#}");
            return 1;
        }
    };
    let access_token = config.whatsapp.access_token.clone();

    let server = match crate::server::start(config, Default::default()).await {
        Ok(server) => server,
        Err(error) => {
            emulator.shutdown();
            if created_data_dir {
                // Leave nothing behind: the folder is still empty (remove_dir refuses otherwise).
                let _ = std::fs::remove_dir(&data_dir);
            }
            if error.to_string().starts_with("cannot listen on") {
                eprintln!("switchboard demo: {error:#}");
                eprintln!(
                    "  Another program (perhaps another switchboard) may be using that address. Try another port, \
                     e.g. `switchboard demo --listen 127.0.0.1:8081`, or `--listen 127.0.0.1:0` for any free port."
                );
            } else {
                eprintln!("switchboard demo: cannot start the engine: {error:#}");
            }
            return 1;
        }
    };
    let addr = reachable(server.addr);
    let base_url = format!("http://{addr}");
    emulator.set_webhook_url(Some(sim::webhook::webhook_url(&base_url)));
    let emulator = Arc::new(emulator);

    print_banner(&addr, &roster, agents, rate, &data_dir);
    println!("Meta Conversions API (docs/integrations.md): paid leads send QualifiedLead when an agent gets them");
    println!("and Purchase when they close won, to the emulator's dataset {DEMO_DATASET_ID}. See them with:");
    println!("  curl -H 'Authorization: Bearer {access_token}' {}", emulator.conversions_url());
    println!("Co-pilot (docs/copilot.md): ad leads get the sales team's four questions first (reply buttons, a city");
    println!("list, a number, free text) with status `bot`; qualified ones, and those who ask for a person, go to");
    println!("the agents with a summary; the rest are closed as not qualified. The status line counts them.");
    println!();

    let ctx = Arc::new(Ctx {
        base_url: base_url.clone(),
        app_secret,
        run_id: started_unix,
        stats: Stats::default(),
        closed_contacts: Mutex::new(Vec::new()),
        leads: copilot::Leads::default(),
        client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
    });

    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    for (agent_id, token) in &roster.simulated {
        tasks.push(tokio::spawn(agent_loop(ctx.clone(), agent_id.clone(), token.clone())));
    }
    tasks.push(tokio::spawn(customers(ctx.clone(), rate, flow.questions.len())));
    tasks.push(tokio::spawn(copilot::answer_leads(ctx.clone(), emulator.clone(), flow)));
    tasks.push(tokio::spawn(status_lines(ctx.clone(), emulator.clone(), roster.manager_token.clone())));

    crate::cli::wait_for_signal().await;
    println!("stopping…");
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        let _ = task.await;
    }
    // The simulated agents' sockets are gone; give their server-side sessions
    // a moment to notice and end before the engine closes its store.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No more status webhooks into an engine that is closing.
    emulator.set_webhook_url(None);
    server.shutdown().await;
    emulator.shutdown();
    println!("stopped");
    0
}

/// Who is configured: the simulated agents, the human `you`, the manager.
struct Roster {
    simulated: Vec<(String, String)>,
    you_token: String,
    manager_token: String,
}

impl Roster {
    fn new(agents: usize) -> Roster {
        Roster {
            simulated: (1..=agents).map(|n| (format!("agent-{n}"), secret())).collect(),
            you_token: secret(),
            manager_token: secret(),
        }
    }

    fn specs(&self) -> Vec<AgentSpec> {
        let agent = |id: &str, name: String, token: &str, city: Option<&str>, teams: Vec<String>| AgentSpec {
            id: id.to_owned(),
            name: Some(name),
            role: Role::Agent,
            token: Some(token.to_owned()),
            token_sha256: None,
            teams,
            capacity: Some(AGENT_CAPACITY),
            city: city.map(str::to_owned),
            manages: Vec::new(),
            shift: None,
            copilot: None,
        };
        let mut specs: Vec<AgentSpec> = self
            .simulated
            .iter()
            .enumerate()
            .map(|(index, (id, token))| {
                let name = format!("{} (simulated)", AGENT_NAMES[index % AGENT_NAMES.len()]);
                // Each team gets agents in turn; everyone also helps sales.
                let home = TEAMS[index % TEAMS.len()].0;
                let teams =
                    if home == "sales" { vec![home.to_owned()] } else { vec![home.to_owned(), "sales".to_owned()] };
                let mut spec = agent(id, name, token, Some(AGENT_CITIES[index % AGENT_CITIES.len()]), teams);
                // Every other one with the co-pilot's assist on, as the
                // dashboard shows (docs/copilot.md "Agent assist").
                spec.copilot = (index % 2 == 0).then_some(true);
                spec
            })
            .collect();
        let every_team = TEAMS.iter().map(|(id, _, _)| (*id).to_owned()).collect();
        specs.push(agent("you", "You".to_owned(), &self.you_token, None, every_team));
        specs.push(AgentSpec {
            // An admin: the newcomer may try the admin API (the agent pool, the rules) too.
            id: "manager".to_owned(),
            name: Some("Manager".to_owned()),
            role: Role::Admin,
            token: Some(self.manager_token.clone()),
            token_sha256: None,
            teams: Vec::new(),
            capacity: None,
            city: None,
            manages: Vec::new(),
            shift: None,
            copilot: None,
        });
        specs
    }
}

fn print_banner(addr: &SocketAddr, roster: &Roster, agents: usize, rate: f64, data_dir: &std::path::Path) {
    println!();
    println!("Switchboard demo is running: the engine, a built-in WhatsApp Cloud API emulator (no Meta account),");
    println!("{agents} simulated agents and ~{} simulated customers writing {rate} messages/s.", CUSTOMER_NAMES.len());
    println!();
    println!("  Manager dashboard:  http://{addr}/?token={}", roster.manager_token);
    println!("  Your agent inbox:   http://{addr}/agent?token={}", roster.you_token);
    println!("                      (set yourself online there to start receiving conversations)");
    println!(
        "  API:                curl -H 'Authorization: Bearer {}' http://{addr}/api/v1/conversations",
        roster.manager_token
    );
    println!(
        "  Agent pool:         curl -H 'Authorization: Bearer {}' http://{addr}/api/v1/admin/agents",
        roster.manager_token
    );
    println!("                      (POST there to onboard an agent: docs/API.md \"Admin: agents\")");
    println!("  Data directory:     {}", data_dir.display());
    println!();
    println!("Routing (docs/routing.md): \"EMI\", \"pay\"… go to collections; \"documents\", \"brochure\" to support;");
    println!("a customer who names Pune to the Pune showroom; ad leads and everything else to sales. Each");
    println!("agent's `assigned` frame and the audit log say which rule routed what (route.rule).");
    println!();
    println!("A status line follows every {} s. Ctrl-C to stop.", STATUS_EVERY.as_secs());
    println!();
}

/// The demo's `[capi]` dataset (any digits: the emulator takes any).
const DEMO_DATASET_ID: &str = "1234567890";

/// Draft replies for agents with the co-pilot on (docs/copilot.md "Agent
/// assist"): "you" turns it on in the inbox and gets them.
fn demo_assist() -> crate::suggestions_draft::AssistConfig {
    let reply = |phrases: &[&str], text: &str| crate::suggestions_draft::ReplySpec {
        phrases: phrases.iter().map(|phrase| (*phrase).to_owned()).collect(),
        regex: None,
        text: text.to_owned(),
        teams: Vec::new(),
    };
    crate::suggestions_draft::AssistConfig {
        replies: vec![
            reply(
                &["price", "how much", "cost"],
                "Hi {contact.name}, the premium plan is 999 a month, the first month free. Shall I start it for you?",
            ),
            reply(&["emi", "instalment", "installment"], "Yes {contact.name}: EMI from 3 to 12 months, no extra cost."),
        ],
        default_reply: None,
        ..Default::default()
    }
}

/// Gives the sales team its co-pilot (`copilot::spec`) and the fields it
/// fills; returns the ad leads' flow, which the simulated leads answer.
fn demo_copilot(config: &mut Config) -> anyhow::Result<actors::copilot::FlowSpec> {
    config.dispositions.extend(copilot::fields()?);
    let spec = copilot::spec()?;
    let flow = spec.flows.first().cloned().ok_or_else(|| anyhow::anyhow!("the demo's co-pilot has no flow"))?;
    let sales = config
        .teams
        .iter_mut()
        .find(|team| team.id == "sales")
        .ok_or_else(|| anyhow::anyhow!("the demo has no sales team"))?;
    sales.copilot = Some(Box::new(spec));
    Ok(flow)
}

fn demo_capi() -> crate::config::CapiConfig {
    crate::config::CapiConfig {
        dataset_id: DEMO_DATASET_ID.to_owned(),
        waba_id: sim::emulator::WABA_ID.to_owned(),
        on_qualified: "QualifiedLead".to_owned(),
        on_won: "Purchase".to_owned(),
        currency: Some("INR".to_owned()),
        max_attempts: 12,
        max_in_flight: 4,
        timeout_ms: 10_000,
    }
}

/// What the demo's tasks share.
struct Ctx {
    /// `http://HOST:PORT` of the engine, reachable from this process.
    base_url: String,
    app_secret: String,
    /// Makes message ids unique across runs sharing a data directory.
    run_id: u64,
    stats: Stats,
    /// Contacts whose conversation a simulated agent closed: their next
    /// message opens a new conversation.
    closed_contacts: Mutex<Vec<String>>,
    /// Ad leads answering the co-pilot.
    leads: copilot::Leads,
    client: reqwest::Client,
}

#[derive(Default)]
struct Stats {
    webhooks_posted: AtomicU64,
    webhooks_acked: AtomicU64,
    webhooks_failed: AtomicU64,
    replies: AtomicU64,
    reply_errors: AtomicU64,
    closes: AtomicU64,
    close_errors: AtomicU64,
    reconnects: AtomicU64,
    /// Answers the ad leads gave the co-pilot.
    copilot_answers: AtomicU64,
}

fn count(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------
// Customers

struct Customer {
    wa_id: String,
    name: &'static str,
    /// Whether the customer has a conversation that is not known to be closed.
    open: bool,
}

/// Posts signed inbound webhooks at `rate` messages per second.
async fn customers(ctx: Arc<Ctx>, rate: f64, questions: usize) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut pool: Vec<Customer> = CUSTOMER_NAMES
        .iter()
        .enumerate()
        .map(|(index, name)| Customer { wa_id: format!("9198000000{index:02}"), name, open: false })
        .collect();
    let url = sim::webhook::webhook_url(&ctx.base_url);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent: u64 = 0;
    loop {
        interval.tick().await;
        let closed: Vec<String> = std::mem::take(&mut *ctx.closed_contacts.lock().unwrap_or_else(|p| p.into_inner()));
        for wa_id in closed {
            if let Some(customer) = pool.iter_mut().find(|customer| customer.wa_id == wa_id) {
                customer.open = false;
            }
        }
        // Skewed: low indexes write far more often (regulars), high ones rarely.
        let index = ((rng.random::<f64>().powi(2)) * pool.len() as f64) as usize;
        let customer = &mut pool[index.min(CUSTOMER_NAMES.len() - 1)];
        if ctx.leads.busy(&customer.wa_id) {
            continue; // answering the co-pilot's questions (copilot::answer_leads)
        }
        sent += 1;
        let wamid = format!("wamid.demo.{}.{sent}", ctx.run_id);
        let (text, referral) = if customer.open {
            (pick(&mut rng, CUSTOMER_TEXTS).to_string(), None)
        } else {
            let roll: f64 = rng.random();
            if roll < 0.55 {
                let referral = json!({
                    "source_url": "https://fb.me/demo",
                    "source_id": format!("ad-{}", rng.random_range(1..=3)),
                    "source_type": "ad",
                    "headline": "Festive offer",
                    "ctwa_clid": format!("clid-{}-{sent}", ctx.run_id),
                });
                // The sales team's co-pilot will ask it its questions.
                ctx.leads.clicked(&customer.wa_id, customer.name, copilot::Persona::pick(&mut rng, questions));
                (pick(&mut rng, AD_OPENERS).to_string(), Some(referral))
            } else if roll < 0.75 {
                (format!("Hi, my friend sent me here. ref:DIWALI25 {}", pick(&mut rng, CUSTOMER_TEXTS)), None)
            } else {
                (pick(&mut rng, CUSTOMER_TEXTS).to_string(), None)
            }
        };
        let payload = sim::emulator::inbound_text_payload(
            PHONE_NUMBER_ID,
            &customer.wa_id,
            customer.name,
            &wamid,
            &text,
            unix_seconds() as i64,
            referral,
        );
        if post_webhook(&ctx, &url, &payload).await {
            customer.open = true;
        }
    }
}

/// Posts one signed webhook; true when the engine acknowledged it.
async fn post_webhook(ctx: &Ctx, url: &str, payload: &Value) -> bool {
    let body = match serde_json::to_vec(payload) {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(%error, "demo: cannot encode a webhook");
            return false;
        }
    };
    count(&ctx.stats.webhooks_posted);
    let result = sim::webhook::signed_post(&ctx.client, url, ctx.app_secret.as_bytes(), body).send().await;
    let problem = match result {
        Ok(response) if response.status().is_success() => {
            count(&ctx.stats.webhooks_acked);
            return true;
        }
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            format!("the engine answered {status}: {text}")
        }
        Err(error) => format!("cannot reach the engine: {error}"),
    };
    let failed = count(&ctx.stats.webhooks_failed);
    // Say it, without flooding the terminal when the engine is down.
    if failed.is_power_of_two() || failed.is_multiple_of(100) {
        tracing::warn!(failed, "demo: a customer webhook was not accepted: {problem}");
    } else {
        tracing::debug!("demo: a customer webhook was not accepted: {problem}");
    }
    false
}

// ---------------------------------------------------------------------------
// Agents

/// Keeps one simulated agent connected, reconnecting with backoff.
async fn agent_loop(ctx: Arc<Ctx>, agent_id: String, token: String) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let began = Instant::now();
        match agent_session(&ctx, &agent_id, &token).await {
            Ok(()) => tracing::debug!(agent = %agent_id, "demo: agent session ended"),
            Err(error) => tracing::warn!(agent = %agent_id, "demo: agent session failed: {error:#}"),
        }
        if began.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(500);
        }
        count(&ctx.stats.reconnects);
        let jitter = Duration::from_millis(rand::random_range(0..250));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// A conversation a simulated agent holds.
struct Held {
    contact: String,
    /// Agent messages in the conversation so far.
    replies: u32,
    /// Replies after which the agent closes it (about 3).
    target: u32,
    /// Bumped on every customer message and every reply: a scheduled action
    /// with an older generation is stale and dropped.
    generation: u64,
    close_attempts: u32,
}

enum Action {
    /// Reply (or close, once enough replies were sent), unless stale.
    Reply {
        conversation_id: String,
        generation: u64,
        nudge: bool,
    },
    Close {
        conversation_id: String,
    },
}

enum Pending {
    SetStatus,
    Send { conversation_id: String },
    Close { conversation_id: String },
}

type Timer = Pin<Box<dyn Future<Output = Action> + Send>>;

struct AgentState {
    agent_id: String,
    rng: StdRng,
    held: HashMap<String, Held>,
    pending: HashMap<u64, Pending>,
    timers: FuturesUnordered<Timer>,
    next_id: u64,
    /// Frames to send, in order.
    outbox: Vec<Value>,
}

impl AgentState {
    fn schedule(&mut self, after: Duration, action: Action) {
        self.timers.push(Box::pin(async move {
            tokio::time::sleep(after).await;
            action
        }));
    }

    fn think_time(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(1000..=3000))
    }

    fn request(&mut self, pending: Pending, mut frame: Value) {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.pending.insert(id, pending);
        self.outbox.push(frame);
    }

    /// A conversation from a snapshot or an `assigned` event.
    fn take(&mut self, conversation: &Value) {
        let Some(id) = conversation["id"].as_str() else { return };
        if conversation["status"].as_str() == Some("closed") {
            return;
        }
        let messages = conversation["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
        // The co-pilot's part (a handed-over ad lead) is not the agent's.
        let people: Vec<&Value> = messages.iter().filter(|message| message["author"] != "copilot").collect();
        let replies = people.iter().filter(|message| message["direction"] == "out").count() as u32;
        let customer_waiting = people.last().is_none_or(|message| message["direction"] == "in");
        let held = Held {
            contact: conversation["contact"]["wa_id"].as_str().unwrap_or_default().to_owned(),
            replies,
            target: self.rng.random_range(2..=4),
            generation: 0,
            close_attempts: 0,
        };
        self.held.insert(id.to_owned(), held);
        let after = if customer_waiting { self.think_time() } else { self.nudge_time() };
        self.schedule(after, Action::Reply { conversation_id: id.to_owned(), generation: 0, nudge: !customer_waiting });
    }

    fn nudge_time(&mut self) -> Duration {
        Duration::from_millis(self.rng.random_range(5000..=9000))
    }

    fn on_frame(&mut self, ctx: &Ctx, frame: Value) {
        match frame["type"].as_str().unwrap_or_default() {
            "welcome" => tracing::debug!(agent = %self.agent_id, status = %frame["status"], "demo: agent connected"),
            "snapshot" => {
                self.held.clear();
                for conversation in frame["conversations"].as_array().map(Vec::as_slice).unwrap_or_default() {
                    self.take(conversation);
                }
            }
            "assigned" => self.take(&frame["conversation"]),
            "message" => {
                let Some(conversation_id) = frame["conversation_id"].as_str() else { return };
                if frame["message"]["direction"] != "in" {
                    return; // our own reply, echoed
                }
                let Some(held) = self.held.get_mut(conversation_id) else { return };
                held.generation += 1;
                let action = Action::Reply {
                    conversation_id: conversation_id.to_owned(),
                    generation: held.generation,
                    nudge: false,
                };
                let after = self.think_time();
                self.schedule(after, action);
            }
            "unassigned" => {
                if let Some(conversation_id) = frame["conversation_id"].as_str() {
                    self.held.remove(conversation_id);
                }
            }
            "ok" => match frame["id"].as_u64().and_then(|id| self.pending.remove(&id)) {
                Some(Pending::SetStatus) => tracing::debug!(agent = %self.agent_id, "demo: agent is online"),
                Some(Pending::Send { .. }) => {
                    count(&ctx.stats.replies);
                }
                Some(Pending::Close { conversation_id }) => {
                    count(&ctx.stats.closes);
                    if let Some(held) = self.held.remove(&conversation_id) {
                        ctx.closed_contacts.lock().unwrap_or_else(|p| p.into_inner()).push(held.contact);
                    }
                }
                None => {}
            },
            "error" => self.on_error(ctx, &frame),
            _ => {} // status, sla, window, workload: nothing to do
        }
    }

    fn on_error(&mut self, ctx: &Ctx, frame: &Value) {
        let code = frame["code"].as_str().unwrap_or("unknown").to_owned();
        let message = frame["message"].as_str().unwrap_or_default();
        let pending = frame["id"].as_u64().and_then(|id| self.pending.remove(&id));
        tracing::debug!(agent = %self.agent_id, %code, message, "demo: the engine refused a request");
        let gone = matches!(code.as_str(), "forbidden" | "not_found");
        match pending {
            Some(Pending::Send { conversation_id }) => {
                count(&ctx.stats.reply_errors);
                if gone {
                    self.held.remove(&conversation_id);
                } else if code == "window_closed" {
                    self.schedule(self.think_time_fixed(), Action::Close { conversation_id });
                } else if let Some(held) = self.held.get_mut(&conversation_id) {
                    // rate_limited, upstream_error, unavailable…: try again later.
                    held.generation += 1;
                    let action = Action::Reply { conversation_id, generation: held.generation, nudge: true };
                    let after = self.nudge_time();
                    self.schedule(after, action);
                }
            }
            Some(Pending::Close { conversation_id }) => {
                count(&ctx.stats.close_errors);
                let retry = match self.held.get_mut(&conversation_id) {
                    Some(held) if !gone && held.close_attempts < 3 => true,
                    Some(_) => {
                        self.held.remove(&conversation_id);
                        false
                    }
                    None => false,
                };
                if retry {
                    self.schedule(Duration::from_secs(5), Action::Close { conversation_id });
                }
            }
            Some(Pending::SetStatus) => {
                tracing::warn!(agent = %self.agent_id, %code, message, "demo: the engine refused to set the agent online");
            }
            None => {}
        }
    }

    fn think_time_fixed(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn on_action(&mut self, action: Action) {
        match action {
            Action::Reply { conversation_id, generation, nudge } => {
                let Some(held) = self.held.get_mut(&conversation_id) else { return };
                if held.generation != generation {
                    return; // the customer wrote again: a fresh reply is scheduled
                }
                if held.replies >= held.target {
                    self.close(conversation_id);
                    return;
                }
                held.replies += 1;
                held.generation += 1;
                let generation = held.generation;
                let text = if nudge { pick(&mut self.rng, AGENT_NUDGES) } else { pick(&mut self.rng, AGENT_REPLIES) };
                self.request(
                    Pending::Send { conversation_id: conversation_id.clone() },
                    json!({"type": "send", "conversation_id": conversation_id, "text": text}),
                );
                // Nobody answers: follow up (or close, once enough was said).
                let after = self.nudge_time();
                self.schedule(after, Action::Reply { conversation_id, generation, nudge: true });
            }
            Action::Close { conversation_id } => {
                if self.held.contains_key(&conversation_id) {
                    self.close(conversation_id);
                }
            }
        }
    }

    fn close(&mut self, conversation_id: String) {
        if let Some(held) = self.held.get_mut(&conversation_id) {
            held.close_attempts += 1;
            // No more scheduled replies for it.
            held.generation += 1;
        }
        let outcome = *pick(&mut self.rng, OUTCOMES);
        let mut fields = json!({ "outcome": outcome });
        if outcome == "closed_won" {
            fields["amount"] = json!(1500);
        }
        self.request(
            Pending::Close { conversation_id: conversation_id.clone() },
            json!({"type": "close", "conversation_id": conversation_id, "fields": fields}),
        );
    }
}

/// One WebSocket session of a simulated agent; returns when the socket closes.
async fn agent_session(ctx: &Ctx, agent_id: &str, token: &str) -> anyhow::Result<()> {
    let connecting = sim::agent::connect(&ctx.base_url, token, sim::agent::Protocol::Json, None);
    let (socket, _) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting to {}", sim::agent::ws_url(&ctx.base_url)))??;
    let (mut sink, mut stream) = socket.split();

    let mut state = AgentState {
        agent_id: agent_id.to_owned(),
        rng: StdRng::from_rng(&mut rand::rng()),
        held: HashMap::new(),
        pending: HashMap::new(),
        timers: FuturesUnordered::new(),
        next_id: 1,
        outbox: Vec::new(),
    };
    state.request(Pending::SetStatus, json!({"type": "set_status", "status": "online"}));
    loop {
        for frame in std::mem::take(&mut state.outbox) {
            sink.send(WsMessage::text(frame.to_string())).await?;
        }
        tokio::select! {
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(WsMessage::Text(text))) => text,
                    Some(Ok(WsMessage::Close(frame))) => {
                        tracing::debug!(agent = %agent_id, ?frame, "demo: the engine closed the session");
                        return Ok(());
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                    None => return Ok(()),
                };
                match serde_json::from_str::<Value>(text.as_str()) {
                    Ok(frame) => state.on_frame(ctx, frame),
                    Err(error) => tracing::debug!(agent = %agent_id, %error, "demo: a frame that is not JSON"),
                }
            }
            Some(action) = state.timers.next(), if !state.timers.is_empty() => state.on_action(action),
        }
    }
}

// ---------------------------------------------------------------------------
// Status lines

async fn status_lines(ctx: Arc<Ctx>, emulator: Arc<Emulator>, manager_token: String) {
    let started = Instant::now();
    let mut copilot = CopilotTally::new(unix_seconds() as i64 * 1000);
    let mut interval = tokio::time::interval(STATUS_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let mut bot = 0;
        let conversations = match conversation_counts(&ctx, &manager_token).await {
            Ok(counts) => {
                bot = *counts.get("bot").unwrap_or(&0);
                let open = counts.get("bot").unwrap_or(&0)
                    + counts.get("queued").unwrap_or(&0)
                    + counts.get("assigned").unwrap_or(&0);
                let by_team: Vec<String> = TEAMS
                    .iter()
                    .map(|(id, _, _)| format!("{id} {}", counts.get(&format!("team:{id}")).unwrap_or(&0)))
                    .collect();
                format!(
                    "conversations {open} open ({bot} with the co-pilot, {} assigned, {} queued; by team: {}), {} closed",
                    counts.get("assigned").unwrap_or(&0),
                    counts.get("queued").unwrap_or(&0),
                    by_team.join(", "),
                    counts.get("closed").unwrap_or(&0),
                )
            }
            Err(error) => {
                tracing::debug!("demo: cannot list conversations: {error:#}");
                "conversations: (the API did not answer)".to_owned()
            }
        };
        if let Err(error) = copilot.read(&ctx, &manager_token).await {
            tracing::debug!("demo: cannot read the audit log: {error:#}");
        }
        let stats = &ctx.stats;
        let failed = get(&stats.webhooks_failed);
        let failed = if failed > 0 { format!(", {failed} failed") } else { String::new() };
        println!(
            "[demo {:>4}s] webhooks {} posted ({} ok{failed}) | {conversations} | agent replies {}, closes {} | \
             emulator accepted {} sends, {} Conversions API events",
            started.elapsed().as_secs(),
            get(&stats.webhooks_posted),
            get(&stats.webhooks_acked),
            get(&stats.replies),
            get(&stats.closes),
            emulator.accepted_count(),
            emulator.conversions().len(),
        );
        println!("{}", copilot.line(bot, get(&stats.copilot_answers)));
        if let Some((reason, summary)) = copilot.latest.take() {
            println!("           latest hand-over ({reason}): {summary}");
        }
    }
}

/// The co-pilot's decisions so far, read from the audit log (its
/// `copilot_*` entries since the demo went live: docs/copilot.md "Events").
struct CopilotTally {
    /// The live demo's start: the past days' entries are not counted.
    from_ms: i64,
    /// The last entry read (`n`).
    after: Option<u64>,
    started: u64,
    qualified: u64,
    /// Hand-overs by reason.
    handed: std::collections::BTreeMap<String, u64>,
    /// Closes by reason (`not_qualified`, `nurtured`).
    closed: u64,
    /// The last hand-over's reason and summary, until printed.
    latest: Option<(String, String)>,
}

impl CopilotTally {
    fn new(from_ms: i64) -> CopilotTally {
        CopilotTally {
            from_ms,
            after: None,
            started: 0,
            qualified: 0,
            handed: Default::default(),
            closed: 0,
            latest: None,
        }
    }

    /// Takes in the audit entries written since the last read (a page of
    /// up to 10,000 a time: a busy demo catches up over a few lines).
    async fn read(&mut self, ctx: &Ctx, manager_token: &str) -> anyhow::Result<()> {
        let mut url = format!("{}/api/v1/audit?limit=10000", ctx.base_url);
        match self.after {
            Some(after) => url.push_str(&format!("&after={after}")),
            None => url.push_str(&format!("&from={}", protocol::time::format_rfc3339(self.from_ms))),
        }
        let response = ctx.client.get(&url).bearer_auth(manager_token).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("GET {url} answered {status}: {}", response.text().await.unwrap_or_default());
        }
        for line in response.text().await?.lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
            if let Some(n) = entry["n"].as_u64() {
                self.after = Some(n);
            }
            self.take(&entry);
        }
        Ok(())
    }

    fn take(&mut self, entry: &Value) {
        let data = &entry["data"];
        match entry["action"].as_str().unwrap_or_default() {
            "copilot_started" => self.started += 1,
            "copilot_qualified" => self.qualified += 1,
            "copilot_handoff" => {
                let reason = data["reason"].as_str().unwrap_or("unknown").to_owned();
                *self.handed.entry(reason.clone()).or_insert(0) += 1;
                self.latest = Some((reason, data["summary"].as_str().unwrap_or_default().to_owned()));
            }
            "copilot_closed" => self.closed += 1,
            _ => {}
        }
    }

    fn line(&self, bot: u64, answers: u64) -> String {
        let handed: u64 = self.handed.values().sum();
        let reasons: Vec<String> = self.handed.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        let reasons = if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) };
        format!(
            "           co-pilot: {} ad leads started, {bot} talking to it now, {answers} answers, {} qualified, \
             {handed} handed to agents{reasons}, {} closed as not qualified",
            self.started, self.qualified, self.closed,
        )
    }
}

/// Conversations by status, read through the HTTP API as a manager.
async fn conversation_counts(ctx: &Ctx, manager_token: &str) -> anyhow::Result<HashMap<String, u64>> {
    let mut counts = HashMap::new();
    let mut before: Option<String> = None;
    // Pages of 1,000, newest first; a long demo stops counting at 20,000.
    for _ in 0..20 {
        let mut url = format!("{}/api/v1/conversations?limit=1000", ctx.base_url);
        if let Some(before) = &before {
            url.push_str(&format!("&before={before}"));
        }
        let response = ctx.client.get(&url).bearer_auth(manager_token).send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("GET {url} answered {status}: {}", response.text().await.unwrap_or_default());
        }
        let body: Value = response.json().await?;
        let page = body["conversations"].as_array().map(Vec::as_slice).unwrap_or_default();
        for conversation in page {
            let status = conversation["status"].as_str().unwrap_or("unknown");
            *counts.entry(status.to_owned()).or_insert(0) += 1;
            if status != "closed" {
                let team = conversation["team"].as_str().unwrap_or("none");
                *counts.entry(format!("team:{team}")).or_insert(0) += 1;
            }
        }
        match page.last().and_then(|conversation| conversation["id"].as_str()) {
            Some(last) if page.len() == 1000 => before = Some(last.to_owned()),
            _ => break,
        }
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------
// Helpers

/// A fresh random secret: 32 hex digits.
fn secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_secs()).unwrap_or(0)
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).expect("the demo's lists are not empty")
}

/// The address to use from this machine: a wildcard listen address
/// (`0.0.0.0`, `::`) is reached through loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into()),
            SocketAddr::V6(_) => addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
        }
    }
    addr
}
