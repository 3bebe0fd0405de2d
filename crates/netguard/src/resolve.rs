//! Name resolution that drops the addresses the policy refuses.
//!
//! reqwest connects only to the addresses its resolver returns, so filtering here judges the
//! very addresses the connection uses: a name cannot pass a check with one address and then
//! connect to another (DNS rebinding). Hosts that are IP literals never reach a resolver; the
//! client checks those itself (see [`crate::Client`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::Refused;
use crate::policy::Policy;

/// Resolves names with an inner resolver and keeps only the addresses the policy allows; a
/// name left with none fails with [`Refused::Name`].
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
    inner: Arc<dyn Resolve>,
}

impl GuardedResolver {
    /// Filters what `inner` resolves through `policy`.
    pub fn new(policy: Arc<Policy>, inner: Arc<dyn Resolve>) -> Self {
        Self { policy, inner }
    }
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let resolving = self.inner.resolve(name);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let mut allowed = Vec::new();
            let mut refused = Vec::new();
            for address in resolving.await? {
                match policy.check(address.ip()) {
                    Ok(()) => allowed.push(address),
                    Err(why) => refused.push(why),
                }
            }
            if allowed.is_empty() && !refused.is_empty() {
                return Err(Refused::Name {
                    host,
                    addresses: refused,
                }
                .into());
            }
            if !refused.is_empty() {
                tracing::debug!(
                    %host,
                    refused = %crate::join(&refused),
                    "dropped refused addresses of a name"
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking threads), as reqwest
/// uses by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0 stands for "the URL's port"; reqwest fills it in.
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}
