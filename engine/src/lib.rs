//! The `switchboard` binary's library: everything that touches the outside
//! world. HTTP and WebSocket ([`http`], [`ws`]), the Graph API client
//! ([`graph`]), configuration ([`config`]), start and shutdown ([`server`]),
//! the HTTP/1 accept loop with its timeouts ([`serve`]),
//! the built-in Cloud API emulator ([`emulator`]) and the demo ([`demo`]).
//!
//! This is the only crate that opens sockets, reads the configuration file
//! or the wall clock; business rules live in `actors`.

pub mod auth;
pub mod cli;
pub mod config;
pub mod demo;
pub mod emulator;
pub mod graph;
pub mod http;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod signature;
pub mod ws;
