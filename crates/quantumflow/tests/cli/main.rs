//! Runs the `quantumflow` binary as a user would, against real PostgreSQL.

mod accounts;
mod cluster;
mod credentials;
mod drain;
mod engine;
mod errors;
mod flows;
mod keys;
mod metrics;
mod migrate;
mod outbound;
mod receiver;
mod support;
mod traces;
mod up;
