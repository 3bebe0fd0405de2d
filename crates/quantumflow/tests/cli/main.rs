//! Runs the `quantumflow` binary as a user would, against real PostgreSQL.

mod engine;
mod errors;
mod migrate;
mod receiver;
mod support;
mod up;
