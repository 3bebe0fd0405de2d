//! Runs the `quantumflow` binary as a user would, against real PostgreSQL.

mod errors;
mod migrate;
mod support;
mod up;
