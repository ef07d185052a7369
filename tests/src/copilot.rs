//! What the co-pilot's black-box tests share (tests/tests/copilot.rs,
//! tests/tests/copilot_reports.rs): a sales team whose `[teams.copilot]`
//! flow qualifies paid leads with three questions (budget buttons, a
//! number of units, a city as text; qualified at 5), an agent, a manager,
//! the Conversions API; and the customer's side of the conversation.

use anyhow::Result;
use serde_json::{Value, json};

use crate::{Harness, eventually, message_webhook};

/// The business number the customers write to.
pub const NUMBER: &str = "100000000000001";
/// The ad every [`ad_click`] comes from.
pub const AD: &str = "120200000000001";

/// The configuration after [`crate::config_head`]; a test may append teams,
/// numbers and agents of its own.
pub const FLOW: &str = r#"
[[teams]]
id = "sales"

[[teams.dispositions]]
key = "outcome"
kind = "enum"
options = ["booked", "not_qualified"]
required_on_close = true
won_values = ["booked"]

[[teams.dispositions]]
key = "budget"
label = "Budget"
kind = "enum"
options = ["under_10l", "10_20l", "over_20l"]

[[teams.dispositions]]
key = "units"
label = "Units"
kind = "number"

[[teams.dispositions]]
key = "city"
label = "City"
kind = "text"

[teams.copilot]

[[teams.copilot.flows]]
id = "ad_leads"
sources = ["paid"]
greeting = "Hi! Thanks for your interest."
qualify_score = 5
handoff_after_s = 600
unqualified = "close"
not_qualified_fields = { outcome = "not_qualified" }

[[teams.copilot.flows.questions]]
id = "budget"
text = "What is your budget?"
field = "budget"
kind = "options"
options = [
  { id = "low", title = "Under 10 lakh", value = "under_10l", score = 0 },
  { id = "mid", title = "10–20 lakh", value = "10_20l", score = 2 },
  { id = "high", title = "Over 20 lakh", value = "over_20l", score = 3 },
]

[[teams.copilot.flows.questions]]
id = "units"
text = "How many units?"
field = "units"
kind = "number"
min = 1
max = 20
score = 1

[[teams.copilot.flows.questions]]
id = "city"
text = "Which city?"
field = "city"
kind = "text"
score = 1

[[agents]]
id = "a1"
token = "a1-token-xyz"
teams = ["sales"]
capacity = 50

[[agents]]
id = "boss"
role = "manager"
token = "manager-token-1"

[capi]
dataset_id = "1234567890"
waba_id = "102290129340398"
currency = "INR"

[outbox]
tick_ms = 20
"#;

/// A click-to-WhatsApp ad's first message from `customer`.
pub async fn ad_click(harness: &Harness, customer: &str) -> Result<()> {
    let message = json!({"type": "text", "text": {"body": "Is this still available?"},
        "referral": {"source_url": "https://fb.me/x", "source_type": "ad", "source_id": AD,
            "headline": "Spring offer", "ctwa_clid": format!("clid-{customer}")}});
    post(harness, customer, "1", message).await
}

/// The customer writes `text` (its `n`th message).
pub async fn say(harness: &Harness, customer: &str, n: &str, text: &str) -> Result<()> {
    post(harness, customer, n, json!({"type": "text", "text": {"body": text}})).await
}

/// The customer taps a reply button.
pub async fn tap(harness: &Harness, customer: &str, n: &str, id: &str, title: &str) -> Result<()> {
    let message = json!({"type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}}});
    post(harness, customer, n, message).await
}

/// Posts the customer's `n`th message to [`NUMBER`], signed.
pub async fn post(harness: &Harness, customer: &str, n: &str, message: Value) -> Result<()> {
    let webhook = message_webhook(NUMBER, customer, &format!("wamid.{customer}.{n}"), message);
    let (status, answer) = harness.post_webhook(&webhook).await?;
    anyhow::ensure!(status == 200, "webhook: {status} {answer}");
    Ok(())
}

/// What the emulator was asked to send to `customer`, in order.
pub fn sent_to(harness: &Harness, customer: &str) -> Vec<Value> {
    harness.emulator.requests().into_iter().map(|request| request.body).filter(|body| body["to"] == customer).collect()
}

/// Waits until `customer` was sent `count` messages (and no more); returns them.
pub async fn sends(harness: &Harness, customer: &str, count: usize) -> Result<Vec<Value>> {
    let sent = eventually(|| async {
        let sent = sent_to(harness, customer);
        (sent.len() >= count).then_some(sent)
    })
    .await?;
    anyhow::ensure!(sent.len() == count, "more than {count} sends: {sent:#?}");
    Ok(sent)
}
