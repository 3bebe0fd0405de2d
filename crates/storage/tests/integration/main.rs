//! Storage tests against real PostgreSQL; each test gets a database of its own.

mod catalog;
mod constraints;
mod plans;
mod queries;
mod support;
