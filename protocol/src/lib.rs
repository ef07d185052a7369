//! Switchboard's wire formats, as plain data.
//!
//! - [`webhook`]: Meta's WhatsApp Cloud API webhook payloads (messages of every
//!   type, statuses with pricing and errors), with unknown fields kept.
//! - [`graph`]: Graph API send requests, responses and error envelopes.
//! - [`model`]: the Conversation and Message shapes clients see.
//! - [`ws`]: the WebSocket frames of the contract's §3.
//! - [`error`]: the error shape and stable codes of §4.
//! - [`codec`]: JSON and MessagePack encodings of frames.
//! - [`json`]: the strict check serde_json does not make (a key twice in an object).
//! - [`time`]: unix milliseconds and the RFC 3339 strings clients see.
//! - [`signature`]: `X-Hub-Signature-256`, the HMAC-SHA256 Meta signs webhooks with.
//!
//! Deliberately absent: IO, async, clocks. This crate only describes data;
//! reading the wall clock is the engine's business.

pub mod codec;
pub mod error;
pub mod events;
pub mod graph;
pub mod json;
pub mod model;
pub mod rules;
pub mod signature;
pub mod time;
pub mod webhook;
pub mod ws;

pub use error::{ApiError, ErrorCode};
