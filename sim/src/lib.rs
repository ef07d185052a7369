//! Simulated Meta, customers and agents: everything that plays the other side
//! of the engine's public interfaces, shared by `switchboard demo` (engine),
//! the black-box tests and the load harness (bench).
//!
//! - [`emulator`]: Meta's Cloud API with fidelity: it validates sends as Meta
//!   does, records each one, injects failures, and posts signed `sent`,
//!   `delivered`, `read` (or `failed`) status webhooks with Meta's retries.
//! - [`sink`]: Meta's Cloud API for load: it answers every send at once, keeps
//!   nothing per request and only counts; its status webhooks are bounded and
//!   never retried, so it cannot slow or grow under a benchmark.
//! - [`webhook`]: the signed-webhook client, as Meta posts to a webhook URL
//!   (`X-Hub-Signature-256` over the raw body).
//! - [`receiver`]: a connector's webhook receiver (PROTOCOL §10) that can
//!   answer 500, 429 with `Retry-After`, late, never, or close the connection.
//! - [`llm`]: a fake OpenAI-compatible chat-completions server (the
//!   co-pilot's language model) that can be good, slow, failing or malformed.
//! - [`agent`]: the WebSocket agent client: the connection (Bearer token,
//!   subprotocol, `resume_from`, 4 KiB read buffers) and [`agent::WsClient`],
//!   which reads frames one by one for tests.
//!
//! It speaks only the public wire formats of `protocol` (webhooks, Graph API
//! bodies, WebSocket frames). Deliberately absent: any dependency on `engine`,
//! `actors` or `storage` (a simulator that could look inside would test less),
//! and any behaviour policy of its users: the demo's customers and agents,
//! the tests' scenarios and the bench's ledger live with them. Errors are
//! `anyhow` where a caller only reports them (tests, demo, bench), typed where
//! a caller decides on them.

pub mod agent;
pub mod emulator;
pub mod llm;
pub mod receiver;
pub mod sink;
pub mod webhook;
