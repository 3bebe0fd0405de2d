//! The policy's classification, and the guarded client against real HTTP servers on loopback.
//!
//! Names are resolved by a resolver the tests inject, never by DNS. The client under test
//! connects from 127.0.0.1, from which the kernel routes nothing but loopback, so even a
//! broken guard could not send a packet to the private and metadata addresses used here.

mod client;
mod policy;
mod server;
