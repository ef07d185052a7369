//! Who writes and what they write.
//!
//! Customers come from a pool and are picked by a Zipf law (s ≈ 1.1): a few
//! customers come back often, most rarely. A customer writes in *sessions*: the
//! first message of a session is the one that opens a conversation (about 55 %
//! from a Click-to-WhatsApp ad with a `referral`, 25 % organic, 20 % with a
//! `ref:CODE`), then a few more follow, one every `customer_gap` on average.
//! Session lengths are geometric with mean `1 / new_conversation_share`, and a
//! new session starts only when fewer sessions are active than the rate needs,
//! so about 30 % of messages start a new conversation whatever the rate, and no
//! single customer writes faster than a person would.
//!
//! Every message has a unique wamid that carries what the agents need to check
//! it when it arrives: the step (phase), the index in the step (hence its
//! scheduled time), the customer, the customer's sequence number and whether it
//! ends the session: `wamid.bench.{run}.{phase}.{index}.{customer}.{seq}.{end}`.
//! The sequence number is also in the text a person would read.

use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The business number the harness's customers write to.
pub const PHONE_NUMBER_ID: &str = "100000000000777";
pub const DISPLAY_PHONE_NUMBER: &str = "15550007777";
pub const WABA_ID: &str = "200000000000777";

/// The shape of the traffic.
#[derive(Clone, Debug)]
pub struct WorkloadShape {
    /// Share of messages that start a new conversation (session).
    pub new_conversation_share: f64,
    /// Mean time between two messages of one customer's session.
    pub customer_gap: Duration,
    /// Zipf exponent over the customer pool.
    pub zipf_exponent: f64,
    /// Of session openers: share with a Click-to-WhatsApp `referral`.
    pub ad_share: f64,
    /// Of session openers: share organic (the rest carry `ref:CODE`).
    pub organic_share: f64,
    /// Of follow-up messages: share that are images with a caption.
    pub image_share: f64,
    /// Of follow-up messages: share that are interactive button replies.
    pub button_reply_share: f64,
}

impl Default for WorkloadShape {
    fn default() -> Self {
        WorkloadShape {
            new_conversation_share: 0.30,
            customer_gap: Duration::from_secs(1),
            zipf_exponent: 1.1,
            ad_share: 0.55,
            organic_share: 0.25,
            image_share: 0.12,
            button_reply_share: 0.08,
        }
    }
}

impl WorkloadShape {
    /// Sessions that must be active for `rate` messages/s to reach each one
    /// every `customer_gap` on average.
    pub fn active_sessions_for(&self, rate: f64) -> usize {
        let follow_up_rate = rate * (1.0 - self.new_conversation_share);
        (follow_up_rate * self.customer_gap.as_secs_f64()).ceil().max(4.0) as usize
    }

    /// Open conversations to expect at `rate` (for sizing agent capacity):
    /// the active sessions plus those waiting for the agent to close them.
    pub fn open_conversations_for(&self, rate: f64, think_time: Duration) -> usize {
        let closing = rate * self.new_conversation_share * (think_time.as_secs_f64() + 0.5);
        self.active_sessions_for(rate) + closing.ceil() as usize
    }
}

/// How a session's first message says where the customer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A Click-to-WhatsApp ad: the message carries a `referral` object.
    AdReferral,
    Organic,
    /// The text contains `ref:CODE`.
    ReferralCode,
}

/// What a follow-up message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    Text,
    Image,
    ButtonReply,
}

/// One message the workload plans; the webhook body is built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedMessage {
    pub customer: u32,
    /// 1, 2, 3… per customer, across all its sessions.
    pub customer_seq: u32,
    /// `Some` for the first message of a session.
    pub opening: Option<Opening>,
    pub content: Content,
    /// The customer has nothing more to say in this session.
    pub ends_session: bool,
}

/// Draws ranks `0..population` with probability ∝ `1 / (rank + 1)^exponent`,
/// by inverting a precomputed cumulative table.
pub struct ZipfSampler {
    cumulative: Vec<f64>,
}

impl ZipfSampler {
    pub fn new(population: usize, exponent: f64) -> ZipfSampler {
        let population = population.max(1);
        let mut cumulative = Vec::with_capacity(population);
        let mut total = 0.0;
        for rank in 1..=population {
            total += 1.0 / (rank as f64).powf(exponent);
            cumulative.push(total);
        }
        for value in &mut cumulative {
            *value /= total;
        }
        ZipfSampler { cumulative }
    }

    pub fn population(&self) -> usize {
        self.cumulative.len()
    }

    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let uniform: f64 = rng.random();
        self.cumulative.partition_point(|&value| value < uniform).min(self.cumulative.len() - 1)
    }
}

struct ActiveSession {
    customer: u32,
    /// Messages still to send in this session.
    remaining: u32,
}

/// Plans messages one at a time. It keeps its customers and open sessions
/// across steps, so a session begun in one step goes on in the next.
pub struct CustomerPlanner {
    shape: WorkloadShape,
    rng: StdRng,
    zipf: ZipfSampler,
    next_seq: Vec<u32>,
    is_active: Vec<bool>,
    active: Vec<ActiveSession>,
}

/// Attempts at drawing, by Zipf, a customer who is not in a session already,
/// before falling back to probing the pool.
const ZIPF_REDRAWS: usize = 32;
const MAX_SESSION_LENGTH: u32 = 40;

impl CustomerPlanner {
    /// A planner for rates up to `max_rate`; the pool is twenty times the
    /// sessions active at that rate (at least 1,000 customers).
    pub fn new(shape: WorkloadShape, max_rate: f64, seed: u64) -> CustomerPlanner {
        let pool = (shape.active_sessions_for(max_rate) * 20).clamp(1_000, 4_000_000);
        let zipf = ZipfSampler::new(pool, shape.zipf_exponent);
        CustomerPlanner {
            shape,
            rng: StdRng::seed_from_u64(seed),
            zipf,
            next_seq: vec![0; pool],
            is_active: vec![false; pool],
            active: Vec::new(),
        }
    }

    pub fn pool_size(&self) -> usize {
        self.zipf.population()
    }

    pub fn active_sessions(&self) -> usize {
        self.active.len()
    }

    /// The next message at `rate` messages/s.
    pub fn next_message(&mut self, rate: f64) -> PlannedMessage {
        if self.active.len() < self.shape.active_sessions_for(rate) {
            self.start_session()
        } else {
            let slot = self.rng.random_range(0..self.active.len());
            self.continue_session(slot)
        }
    }

    fn start_session(&mut self) -> PlannedMessage {
        let customer = self.pick_idle_customer();
        let length = self.session_length();
        let roll: f64 = self.rng.random();
        let opening = if roll < self.shape.ad_share {
            Opening::AdReferral
        } else if roll < self.shape.ad_share + self.shape.organic_share {
            Opening::Organic
        } else {
            Opening::ReferralCode
        };
        let customer_seq = self.bump_seq(customer);
        let ends_session = length == 1;
        if !ends_session {
            self.is_active[customer as usize] = true;
            self.active.push(ActiveSession { customer, remaining: length - 1 });
        }
        PlannedMessage { customer, customer_seq, opening: Some(opening), content: Content::Text, ends_session }
    }

    fn continue_session(&mut self, slot: usize) -> PlannedMessage {
        let session = &mut self.active[slot];
        let customer = session.customer;
        session.remaining -= 1;
        let ends_session = session.remaining == 0;
        if ends_session {
            self.active.swap_remove(slot);
            self.is_active[customer as usize] = false;
        }
        let roll: f64 = self.rng.random();
        let content = if roll < self.shape.image_share {
            Content::Image
        } else if roll < self.shape.image_share + self.shape.button_reply_share {
            Content::ButtonReply
        } else {
            Content::Text
        };
        let customer_seq = self.bump_seq(customer);
        PlannedMessage { customer, customer_seq, opening: None, content, ends_session }
    }

    fn bump_seq(&mut self, customer: u32) -> u32 {
        let seq = &mut self.next_seq[customer as usize];
        *seq += 1;
        *seq
    }

    /// Geometric with mean `1 / new_conversation_share`, at least 1.
    fn session_length(&mut self) -> u32 {
        let share = self.shape.new_conversation_share.clamp(0.01, 1.0);
        if share >= 1.0 {
            return 1;
        }
        let uniform: f64 = self.rng.random_range(f64::EPSILON..1.0);
        let length = (uniform.ln() / (1.0 - share).ln()).ceil().max(1.0);
        (length as u32).min(MAX_SESSION_LENGTH)
    }

    fn pick_idle_customer(&mut self) -> u32 {
        for _ in 0..ZIPF_REDRAWS {
            let candidate = self.zipf.sample(&mut self.rng);
            if !self.is_active[candidate] {
                return candidate as u32;
            }
        }
        // Every popular customer is busy: probe from a random place. The pool
        // is far larger than the active sessions, so this ends quickly.
        let pool = self.is_active.len();
        let start = self.rng.random_range(0..pool);
        (0..pool).map(|offset| (start + offset) % pool).find(|&candidate| !self.is_active[candidate]).unwrap_or(start)
            as u32
    }
}

/// Where a message sits in the run, read back from its wamid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTag {
    pub phase: u32,
    pub index: u64,
    pub customer: u32,
    pub customer_seq: u32,
    pub ends_session: bool,
}

/// Builds wamids and webhook bodies for one run (`run_tag` keeps runs against
/// the same server apart: a wamid seen before would be deduplicated).
#[derive(Clone, Debug)]
pub struct WebhookBuilder {
    run_tag: String,
    wamid_prefix: String,
}

const AD_OPENERS: &[&str] = &[
    "Hi! I saw your ad, is this still available?",
    "Hello, I want to know more about the offer",
    "Hi, what is the price of this?",
];
const ORGANIC_OPENERS: &[&str] =
    &["Hello, I have a question about my order", "Hi, can someone help me?", "Good morning, are you open today?"];
const REFERRAL_CODES: &[&str] = &["DIWALI25", "FRIEND10", "SPRING_24"];
const FOLLOW_UPS: &[&str] = &[
    "Can you deliver to Pune?",
    "What colours do you have?",
    "Is cash on delivery possible?",
    "Ok, and how long does it take?",
    "Thanks, that helps",
];

impl WebhookBuilder {
    pub fn new(run_tag: &str) -> WebhookBuilder {
        WebhookBuilder { run_tag: run_tag.to_owned(), wamid_prefix: format!("wamid.bench.{run_tag}.") }
    }

    pub fn run_tag(&self) -> &str {
        &self.run_tag
    }

    pub fn wamid(&self, phase: u32, index: u64, message: &PlannedMessage) -> String {
        format!(
            "{}{phase}.{index}.{}.{}.{}",
            self.wamid_prefix,
            message.customer,
            message.customer_seq,
            u8::from(message.ends_session)
        )
    }

    /// Reads a wamid this builder made; `None` for anyone else's.
    pub fn parse_wamid(&self, wamid: &str) -> Option<MessageTag> {
        let rest = wamid.strip_prefix(&self.wamid_prefix)?;
        let mut parts = rest.split('.');
        let phase = parts.next()?.parse().ok()?;
        let index = parts.next()?.parse().ok()?;
        let customer = parts.next()?.parse().ok()?;
        let customer_seq = parts.next()?.parse().ok()?;
        let ends_session = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(MessageTag { phase, index, customer, customer_seq, ends_session })
    }

    /// The customer's wa_id (a 12-digit Indian mobile number).
    pub fn customer_wa_id(customer: u32) -> String {
        format!("91{}", 7_000_000_000u64 + u64::from(customer))
    }

    /// Meta's webhook body for one inbound message. Every string inserted is
    /// ours and free of characters JSON would escape, so it is written directly.
    pub fn body(&self, phase: u32, index: u64, message: &PlannedMessage, timestamp_s: u64) -> Vec<u8> {
        let wamid = self.wamid(phase, index, message);
        let wa_id = Self::customer_wa_id(message.customer);
        let seq = message.customer_seq;
        let pick = |choices: &[&'static str]| choices[(index as usize) % choices.len()];
        let mut inner = String::with_capacity(512);
        let _ = write!(inner, r#"{{"from":"{wa_id}","id":"{wamid}","timestamp":"{timestamp_s}","#);
        match (message.opening, message.content) {
            (Some(Opening::AdReferral), _) => {
                let _ = write!(
                    inner,
                    r#""type":"text","text":{{"body":"{} (#{seq})"}},"referral":{{"source_url":"https://fb.me/bench-ad","source_id":"ad-{}","source_type":"ad","headline":"Bench festive offer","body":"Chat with us on WhatsApp","ctwa_clid":"clid-{}-{phase}-{index}"}}"#,
                    pick(AD_OPENERS),
                    index % 7,
                    self.run_tag
                );
            }
            (Some(Opening::Organic), _) => {
                let _ = write!(inner, r#""type":"text","text":{{"body":"{} (#{seq})"}}"#, pick(ORGANIC_OPENERS));
            }
            (Some(Opening::ReferralCode), _) => {
                let _ = write!(
                    inner,
                    r#""type":"text","text":{{"body":"Hi, my friend sent me here ref:{} (#{seq})"}}"#,
                    pick(REFERRAL_CODES)
                );
            }
            (None, Content::Text) => {
                let _ = write!(inner, r#""type":"text","text":{{"body":"{} (#{seq})"}}"#, pick(FOLLOW_UPS));
            }
            (None, Content::Image) => {
                let _ = write!(
                    inner,
                    r#""type":"image","image":{{"id":"media-{}-{phase}-{index}","mime_type":"image/jpeg","sha256":"bench","caption":"photo of the item (#{seq})"}}"#,
                    self.run_tag
                );
            }
            (None, Content::ButtonReply) => {
                let _ = write!(
                    inner,
                    r#""type":"interactive","interactive":{{"type":"button_reply","button_reply":{{"id":"yes-please","title":"Yes please (#{seq})"}}}}"#
                );
            }
        }
        inner.push('}');
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA_ID}","changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"{DISPLAY_PHONE_NUMBER}","phone_number_id":"{PHONE_NUMBER_ID}"}},"contacts":[{{"profile":{{"name":"Customer {}"}},"wa_id":"{wa_id}"}}],"messages":[{inner}]}}}}]}}]}}"#,
            message.customer
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::webhook::WebhookPayload;

    #[test]
    fn bodies_are_meta_webhooks_the_protocol_crate_reads() {
        let builder = WebhookBuilder::new("t1");
        let cases = [
            (Some(Opening::AdReferral), Content::Text),
            (Some(Opening::Organic), Content::Text),
            (Some(Opening::ReferralCode), Content::Text),
            (None, Content::Text),
            (None, Content::Image),
            (None, Content::ButtonReply),
        ];
        for (index, (opening, content)) in cases.into_iter().enumerate() {
            let planned = PlannedMessage { customer: 42, customer_seq: 7, opening, content, ends_session: index == 5 };
            let body = builder.body(3, index as u64, &planned, 1_700_000_000);
            let payload = WebhookPayload::parse(&body).expect("a Meta payload");
            let value = payload.entry[0].changes[0].value.clone();
            let messages: protocol::webhook::MessagesValue = serde_json::from_value(value).expect("messages value");
            let message = &messages.messages[0];
            assert_eq!(message.sender_key(), Some("917000000042"));
            let text = message.display_text().expect("a readable text");
            assert!(text.contains("#7"), "{text}");
            assert_eq!(message.referral.is_some(), opening == Some(Opening::AdReferral));
            let tag = builder.parse_wamid(&message.id).expect("our wamid");
            assert_eq!(
                tag,
                MessageTag { phase: 3, index: index as u64, customer: 42, customer_seq: 7, ends_session: index == 5 }
            );
        }
    }

    #[test]
    fn foreign_wamids_are_not_ours() {
        let builder = WebhookBuilder::new("abc");
        assert_eq!(builder.parse_wamid("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="), None);
        assert_eq!(builder.parse_wamid("wamid.bench.other.1.2.3.4.0"), None);
        assert_eq!(builder.parse_wamid("wamid.bench.abc.1.2.3.4.2"), None);
        assert!(builder.parse_wamid("wamid.bench.abc.1.2.3.4.1").is_some());
    }

    #[test]
    fn about_thirty_percent_of_messages_open_a_conversation_and_sequences_increase() {
        let mut planner = CustomerPlanner::new(WorkloadShape::default(), 2_000.0, 7);
        let mut last_seq = vec![0u32; planner.pool_size()];
        let mut openers = 0;
        let total = 200_000;
        for _ in 0..total {
            let message = planner.next_message(2_000.0);
            if message.opening.is_some() {
                openers += 1;
            }
            assert_eq!(message.customer_seq, last_seq[message.customer as usize] + 1);
            last_seq[message.customer as usize] = message.customer_seq;
        }
        let share = openers as f64 / total as f64;
        assert!((0.26..0.34).contains(&share), "share of new conversations {share}");
        let expected_active = WorkloadShape::default().active_sessions_for(2_000.0);
        assert!(planner.active_sessions() <= expected_active);
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let sampler = ZipfSampler::new(10_000, 1.1);
        let mut rng = StdRng::seed_from_u64(1);
        let draws: Vec<usize> = (0..50_000).map(|_| sampler.sample(&mut rng)).collect();
        let top_ten = draws.iter().filter(|&&rank| rank < 10).count();
        let bottom_half = draws.iter().filter(|&&rank| rank >= 5_000).count();
        assert!(top_ten > bottom_half, "top ten {top_ten}, bottom half {bottom_half}");
        assert!(draws.iter().all(|&rank| rank < 10_000));
    }
}
