//! The control plane's HTTP API, driven through the router without a socket; each test gets a
//! database of its own.

mod auth;
mod connectors;
mod docs;
mod executions;
mod health;
mod ingress;
mod listing;
mod openapi;
mod replace;
mod routing;
mod signatures;
mod support;
mod triggers;
mod workflows;
