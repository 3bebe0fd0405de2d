//! The HTTP client for nodes, with the policy applied to every hop of every request.
//!
//! A request is checked three times over:
//!
//! - [`Client::request`] checks a URL whose host is an address, since reqwest connects to
//!   those without asking the resolver;
//! - the resolver ([`GuardedResolver`]) drops refused addresses of every name it resolves, the
//!   first hop's and every redirect's;
//! - the redirect policy checks each redirect target whose host is an address, for the same
//!   reason as the first check, and keeps the limit of [`MAX_REDIRECTS`].

use std::net::IpAddr;
use std::sync::Arc;

use reqwest::dns::Resolve;
use reqwest::{Method, RequestBuilder, Url, redirect};

use crate::policy::Policy;
use crate::resolve::{GuardedResolver, SystemResolver};
use crate::{Error, Refused};

/// Redirects a request follows before it fails.
pub const MAX_REDIRECTS: usize = 5;

/// What requests call themselves.
const USER_AGENT: &str = concat!("QuantumFlow/", env!("CARGO_PKG_VERSION"));

/// An HTTP client that only reaches the addresses its [`Policy`] allows. Cloning is cheap and
/// shares the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    policy: Arc<Policy>,
}

impl Client {
    /// A client under `policy` that resolves names with the system resolver.
    pub fn new(policy: Policy) -> Result<Self, Error> {
        Self::builder(policy).build()
    }

    /// A client under `policy` with other settings than the defaults of [`Client::new`].
    pub fn builder(policy: Policy) -> Builder {
        Builder {
            policy,
            resolver: Arc::new(SystemResolver),
            local_address: None,
        }
    }

    /// Starts a request to `url`, or refuses it when its host is an address the policy
    /// refuses. Names are judged when they are resolved, so a refused name fails at `send`.
    pub fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, Error> {
        let url = Url::parse(url).map_err(Error::InvalidUrl)?;
        self.policy.check_url(&url).map_err(Refused::Address)?;
        Ok(self.http.request(method, url))
    }

    /// The policy the client applies.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Settings for a [`Client`].
#[must_use]
pub struct Builder {
    policy: Policy,
    resolver: Arc<dyn Resolve>,
    local_address: Option<IpAddr>,
}

impl Builder {
    /// Resolves names with `resolver` before the policy filters them; tests use this to map
    /// names to chosen addresses without DNS.
    pub fn resolver(mut self, resolver: impl Resolve + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Connects from `address`. Connections then go only to addresses of its family, and
    /// from `127.0.0.1` the kernel refuses to route to anything but loopback, which tests use
    /// to make sure nothing they try can leave the machine.
    pub fn local_address(mut self, address: IpAddr) -> Self {
        self.local_address = Some(address);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        // TLS goes through rustls with the ring provider, which the database driver already
        // uses; installing it again is harmless, so the result is ignored.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(self.policy);
        let http = reqwest::Client::builder()
            .dns_resolver(GuardedResolver::new(Arc::clone(&policy), self.resolver))
            .redirect(redirect_policy(Arc::clone(&policy)))
            // A proxy would resolve names itself, where the policy cannot see the addresses.
            .no_proxy()
            .local_address(self.local_address)
            .user_agent(USER_AGENT)
            .build()
            .map_err(Error::Client)?;
        Ok(Client { http, policy })
    }
}

/// Refuses redirects to refused address literals, then applies the redirect limit.
fn redirect_policy(policy: Arc<Policy>) -> redirect::Policy {
    let limit = redirect::Policy::limited(MAX_REDIRECTS);
    redirect::Policy::custom(move |attempt| match policy.check_url(attempt.url()) {
        Ok(()) => limit.redirect(attempt),
        Err(address) => {
            let target = Box::new(attempt.url().clone());
            attempt.error(Refused::Redirect { target, address })
        }
    })
}
