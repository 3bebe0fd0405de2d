//! The control plane's HTTP API, driven through the router without a socket; each test gets a
//! database of its own.

mod auth;
mod connectors;
mod executions;
mod health;
mod ingress;
mod listing;
mod replace;
mod signatures;
mod support;
mod triggers;
mod workflows;
