//! Which addresses outbound requests may reach.
//!
//! [`classify`] puts an address into a [`Category`] when it belongs to a range that is not the
//! public internet: this machine, private and link-local networks (where cloud metadata
//! services answer), carrier-grade NAT, multicast and broadcast, and the ranges reserved for
//! documentation, benchmarking and future use. A [`Policy`] refuses every such address unless
//! one of its allowed CIDR blocks contains it.
//!
//! # IPv6 addresses that carry an IPv4 address
//!
//! - IPv4-mapped addresses (`::ffff:0:0/96`) and the NAT64 well-known prefix (`64:ff9b::/96`)
//!   are judged as the IPv4 address they carry, allow-list included. A mapped address is how a
//!   dual-stack socket spells a connection to that very IPv4 host. A NAT64 address is how an
//!   IPv6-only network behind DNS64 reaches every IPv4 host, public ones included; refusing the
//!   whole prefix would cut such a cluster off from the IPv4 internet, while judging the
//!   carried address refuses exactly what the IPv4 form would.
//! - IPv4-compatible addresses (`::/96`), 6to4 (`2002::/16`), Teredo (`2001::/32`) and
//!   local-use NAT64 (`64:ff9b:1::/48`) are refused outright. They are deprecated or
//!   site-specific, where their packets end up depends on relays and translators that cannot
//!   be seen from here (a 6to4 address names a site behind a relay, not a host), and a worker
//!   has no ordinary reason to use them. An operator who needs one allows its prefix.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

use crate::Error;

/// Why an address is not on the public internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// This machine: `127.0.0.0/8`, `::1`.
    Loopback,
    /// "This host": `0.0.0.0/8`, `::`. Connecting to it reaches this machine.
    Unspecified,
    /// Private networks: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`, and the
    /// deprecated site-local `fec0::/10`.
    Private,
    /// Link-local networks: `169.254.0.0/16`, where cloud metadata services answer, and
    /// `fe80::/10`.
    LinkLocal,
    /// Carrier-grade NAT, `100.64.0.0/10`; some clouds run internal services there too.
    CarrierGradeNat,
    /// Multicast: `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// The limited broadcast address `255.255.255.255`.
    Broadcast,
    /// Documentation: `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`,
    /// `3fff::/20`.
    Documentation,
    /// Benchmarking: `198.18.0.0/15`.
    Benchmarking,
    /// Reserved: `192.0.0.0/24`, `192.88.99.0/24`, `240.0.0.0/4`, `100::/64`, `2001::/23`, and
    /// IPv6 outside the global unicast range `2000::/3`.
    Reserved,
    /// IPv6 that reaches IPv4 through a tunnel or translator whose destination cannot be
    /// judged: IPv4-compatible, 6to4, Teredo and local-use NAT64 addresses.
    Ipv4Tunnel,
}

/// An address the policy refuses, with the reason.
///
/// Displays as `169.254.169.254 is a link-local address (cloud metadata)`, or for an IPv6
/// address judged by the IPv4 address it carries, `::ffff:127.0.0.1 carries 127.0.0.1, a
/// loopback address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAddress {
    address: IpAddr,
    carried: Option<Ipv4Addr>,
    category: Category,
    label: &'static str,
}

impl RefusedAddress {
    /// The refused address.
    pub fn address(&self) -> IpAddr {
        self.address
    }

    /// The IPv4 address an IPv4-mapped or NAT64 address was judged by.
    pub fn carried(&self) -> Option<Ipv4Addr> {
        self.carried
    }

    /// Why it is refused.
    pub fn category(&self) -> Category {
        self.category
    }
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.carried {
            Some(v4) => write!(f, "{} carries {v4}, {}", self.address, self.label),
            None => write!(f, "{} is {}", self.address, self.label),
        }
    }
}

impl std::error::Error for RefusedAddress {}

/// Which addresses outbound connections may reach: everything [`classify`] accepts, plus the
/// allowed CIDR blocks. The default policy allows nothing extra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allowed: Vec<IpNet>,
}

impl Policy {
    /// A policy that refuses every category and allows the given blocks anyway.
    pub fn allowing(blocks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            allowed: blocks.into_iter().collect(),
        }
    }

    /// The blocks allowed although a category would refuse them.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether a connection to `address` is allowed.
    pub fn check(&self, address: IpAddr) -> Result<(), RefusedAddress> {
        let Some(refused) = classify(address) else {
            return Ok(());
        };
        let allowed = self.contains(address)
            || refused
                .carried
                .is_some_and(|v4| self.contains(IpAddr::V4(v4)));
        if allowed { Ok(()) } else { Err(refused) }
    }

    /// Whether the host of `url` is allowed, when it is an address. Names pass here; their
    /// addresses are checked when they are resolved (see [`crate::GuardedResolver`]).
    ///
    /// The `url` crate has already turned every IPv4 spelling that http and https URLs
    /// accept (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`) into an address, so they
    /// are judged as the address they spell.
    pub fn check_url(&self, url: &Url) -> Result<(), RefusedAddress> {
        let address = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            // Only URLs with other schemes keep an address as an opaque name; reqwest refuses
            // those schemes, but checking costs nothing should that ever change.
            Some(Host::Domain(name)) => match name.parse() {
                Ok(address) => address,
                Err(_) => return Ok(()),
            },
            None => return Ok(()),
        };
        self.check(address)
    }

    fn contains(&self, address: IpAddr) -> bool {
        self.allowed.iter().any(|block| block.contains(&address))
    }
}

/// The loopback blocks, `127.0.0.0/8` and `::1/128`, for a single-machine setup whose nodes
/// call services on the same machine.
pub const LOOPBACK: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
];

/// Parses an allow-list entry: a CIDR block such as `10.1.2.0/24` or `::1/128`, or a single
/// address. Host bits below the prefix are dropped (`10.1.2.3/24` is `10.1.2.0/24`).
pub fn parse_block(text: &str) -> Result<IpNet, Error> {
    let text = text.trim();
    if let Ok(block) = text.parse::<IpNet>() {
        return Ok(block.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| Error::InvalidBlock(text.to_owned()))
}

/// The category of `address`, or `None` when it is a public address. Allow-lists play no part
/// here; see [`Policy::check`].
pub fn classify(address: IpAddr) -> Option<RefusedAddress> {
    let (carried, found) = match address {
        IpAddr::V4(v4) => (None, classify_v4(v4)),
        IpAddr::V6(v6) => match carried_ipv4(v6) {
            Some(v4) => (Some(v4), classify_v4(v4)),
            None => (None, classify_v6(v6)),
        },
    };
    found.map(|(category, label)| RefusedAddress {
        address,
        carried,
        category,
        label,
    })
}

/// The IPv4 address that an IPv4-mapped or NAT64 (well-known prefix) address stands for.
fn carried_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    match v6.segments() {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            let [.., a, b, c, d] = v6.octets();
            Some(Ipv4Addr::new(a, b, c, d))
        }
        _ => None,
    }
}

const PRIVATE: &str = "a private address";
const DOCUMENTATION: &str = "a documentation address";

/// The blocks are those listed on [`Category`]; the arms go from narrow to wide where blocks
/// nest, since the first match wins.
fn classify_v4(v4: Ipv4Addr) -> Option<(Category, &'static str)> {
    use Category::*;
    let found = match v4.octets() {
        [0, ..] => (Unspecified, "an unspecified address (this host)"),
        [10, ..] | [172, 16..=31, ..] | [192, 168, ..] => (Private, PRIVATE),
        [100, 64..=127, ..] => (CarrierGradeNat, "a carrier-grade NAT address"),
        [127, ..] => (Loopback, "a loopback address"),
        [169, 254, ..] => (LinkLocal, "a link-local address (cloud metadata)"),
        [192, 0, 0, _] => (Reserved, "a reserved address (IETF protocol assignments)"),
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => (Documentation, DOCUMENTATION),
        [192, 88, 99, _] => (Reserved, "a reserved address (former 6to4 relays)"),
        [198, 18..=19, ..] => (Benchmarking, "a benchmarking address"),
        [224..=239, ..] => (Multicast, "a multicast address"),
        [255, 255, 255, 255] => (Broadcast, "the broadcast address"),
        [240..=255, ..] => (Reserved, "a reserved address (future use)"),
        _ => return None,
    };
    Some(found)
}

/// IPv4-mapped and NAT64 addresses never get here: they are judged as IPv4 (see the module
/// documentation). The first match wins.
fn classify_v6(v6: Ipv6Addr) -> Option<(Category, &'static str)> {
    use Category::*;
    let found = match v6.segments() {
        [0, 0, 0, 0, 0, 0, 0, 0] => (Unspecified, "an unspecified address"),
        [0, 0, 0, 0, 0, 0, 0, 1] => (Loopback, "a loopback address"),
        [0, 0, 0, 0, 0, 0, _, _] => (Ipv4Tunnel, "an IPv4-compatible address (deprecated)"),
        [0x64, 0xff9b, 1, ..] => (Ipv4Tunnel, "a local-use NAT64 address"),
        [0x100, 0, 0, 0, ..] => (Reserved, "a reserved address (discard only)"),
        [0x2001, 0, ..] => (Ipv4Tunnel, "a Teredo address (IPv4 tunnel)"),
        [0x2001, 0..=0x1ff, ..] => (Reserved, "a reserved address (IETF protocol assignments)"),
        [0x2001, 0xdb8, ..] | [0x3fff, 0..=0xfff, ..] => (Documentation, DOCUMENTATION),
        [0x2002, ..] => (Ipv4Tunnel, "a 6to4 address (deprecated IPv4 tunnel)"),
        // Only 2000::/3 is handed out for global unicast.
        [0x2000..=0x3fff, ..] => return None,
        [0xfc00..=0xfdff, ..] => (Private, "a private address (unique local)"),
        [0xfe80..=0xfebf, ..] => (LinkLocal, "a link-local address"),
        [0xfec0..=0xfeff, ..] => (Private, "a private address (site-local, deprecated)"),
        [0xff00..=0xffff, ..] => (Multicast, "a multicast address"),
        // Unassigned; refusing it keeps addresses from future special ranges out by default.
        _ => (
            Reserved,
            "a reserved address (outside global unicast, 2000::/3)",
        ),
    };
    Some(found)
}
