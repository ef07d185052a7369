//! The `switchboard` binary's library: everything that touches the outside
//! world. HTTP and WebSocket ([`http`], [`ws`]; contacts in
//! [`contacts_http`], the admin API in [`admin_http`]), the Graph API client
//! ([`graph`]), configuration ([`config`]), start and shutdown ([`server`]),
//! the HTTP/1 accept loop with its timeouts ([`serve`]), the outbox of
//! deliveries to connectors ([`outbox`], its API in [`outbox_http`], the
//! retry schedule it shares with the Graph client in [`backoff`]), the
//! promise-to-pay follow-ups ([`followups`]), the co-pilot's agent assist
//! (draft replies: [`suggestions`], [`suggestions_draft`]), its optional
//! language-model backend ([`copilot_llm`]),
//! and the demo ([`demo`]), which runs the engine beside the simulated Meta,
//! customers and agents of the `sim` crate.
//!
//! This is the only crate of the server that opens sockets, reads the
//! configuration file or the wall clock; business rules live in `actors`.
//! Deliberately absent: simulators and test scaffolding (they are `sim`'s;
//! [`emulator`] re-exports `sim::emulator` for code written against the old
//! path).

pub mod admin_http;
pub mod assist_http;
pub mod audit;
pub mod audit_cli;
pub mod audit_http;
pub mod auth;
pub mod backoff;
pub mod broadcasts;
pub mod broadcasts_http;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod contacts_http;
pub mod copilot_llm;
pub mod copilot_model;
pub mod demo;
pub mod dispositions_http;
pub mod followups;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod outbox_http;
pub mod reports;
pub mod reports_http;
pub mod serve;
pub mod server;
pub mod signature;
pub mod suggestions;
pub mod suggestions_draft;
pub mod ws;

pub use sim::emulator;
