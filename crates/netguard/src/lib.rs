//! Outbound address filtering: keeps the requests of http and slack nodes, whose URLs come
//! from workflow documents, away from the cluster's own network.
//!
//! Without it, a workflow author could aim a node at the database, the cloud metadata service
//! (`169.254.169.254`), the Kubernetes API or anything else only the workers can reach, and read
//! the answer in the node's output. By default a [`Client`] refuses loopback, private,
//! link-local, carrier-grade NAT, multicast, broadcast and reserved addresses; an operator
//! allows chosen CIDR blocks back with [`Policy::allowing`].
//!
//! The check applies to the address each connection is made to, on every redirect hop, so
//! neither a name that resolves privately nor a redirect from a public server gets around it.
//! Every refusal happens before a connection is attempted.
//!
//! # Layout
//!
//! - [`policy`]: which addresses are refused, and the allow-list.
//! - [`resolve`]: the resolver that drops refused addresses.
//! - [`Client`]: the reqwest client with the policy applied to literals and redirects too.

mod client;
pub mod policy;
pub mod resolve;

pub use client::{Builder, Client, MAX_REDIRECTS};
pub use ipnet::IpNet;
pub use policy::{Category, LOOPBACK, Policy, RefusedAddress, classify, parse_block};
pub use resolve::{GuardedResolver, SystemResolver};
pub use url::Url;

/// Why an outbound request was stopped before it connected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The URL's host is a refused address.
    #[error("{0}")]
    Address(RefusedAddress),
    /// A redirect pointed at a refused address. Only the target's origin is shown: its path
    /// and query may carry a token.
    #[error("the redirect to {} was refused: {address}", .target.origin().ascii_serialization())]
    Redirect {
        /// Where the redirect pointed.
        target: Box<Url>,
        /// What was refused.
        address: RefusedAddress,
    },
    /// Every address a name resolved to is refused.
    #[error("{host} resolves only to refused addresses: {}", join(.addresses))]
    Name {
        /// The name.
        host: String,
        /// Its addresses, each with the reason.
        addresses: Vec<RefusedAddress>,
    },
}

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request would reach a refused address.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The URL does not parse.
    #[error("the URL is not valid: {0}")]
    InvalidUrl(url::ParseError),
    /// An allow-list entry is neither a CIDR block nor an address.
    #[error("{0:?} is not a CIDR block (such as 10.1.2.0/24 or ::1/128) or an IP address")]
    InvalidBlock(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// The refusal behind an error from a request, if a refusal is what stopped it. reqwest wraps
/// what the resolver and the redirect policy return, so this walks the error's sources.
pub fn find_refusal<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        next = err.source();
    }
    None
}

fn join(addresses: &[RefusedAddress]) -> String {
    let texts: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    texts.join("; ")
}
