//! `X-Hub-Signature-256`, checked on every webhook. The functions are pure and
//! live in `protocol::signature`; this path stays for the engine's callers.

pub use protocol::signature::{sign, verify};
