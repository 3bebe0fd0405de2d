//! Classification only: which URLs the policy refuses and what it says about them. Nothing
//! here connects anywhere.

use quantumflow_netguard::{Category, IpNet, LOOPBACK, Policy, Url, classify, parse_block};

fn url(text: &str) -> Url {
    Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// URLs the default policy refuses, with the category and the whole message.
const REFUSED: &[(&str, Category, &str)] = &[
    (
        "http://127.0.0.1/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://127.255.255.254:8080/",
        Category::Loopback,
        "127.255.255.254 is a loopback address",
    ),
    (
        "http://[::1]/",
        Category::Loopback,
        "::1 is a loopback address",
    ),
    (
        "http://169.254.169.254/latest/meta-data/",
        Category::LinkLocal,
        "169.254.169.254 is a link-local address (cloud metadata)",
    ),
    (
        "http://10.0.0.1/",
        Category::Private,
        "10.0.0.1 is a private address",
    ),
    (
        "http://172.16.0.1/",
        Category::Private,
        "172.16.0.1 is a private address",
    ),
    (
        "http://172.31.255.255/",
        Category::Private,
        "172.31.255.255 is a private address",
    ),
    (
        "https://192.168.1.1/",
        Category::Private,
        "192.168.1.1 is a private address",
    ),
    (
        "http://0.0.0.0/",
        Category::Unspecified,
        "0.0.0.0 is an unspecified address (this host)",
    ),
    (
        "http://0.1.2.3/",
        Category::Unspecified,
        "0.1.2.3 is an unspecified address (this host)",
    ),
    (
        "http://100.64.0.1/",
        Category::CarrierGradeNat,
        "100.64.0.1 is a carrier-grade NAT address",
    ),
    (
        "http://100.127.255.255/",
        Category::CarrierGradeNat,
        "100.127.255.255 is a carrier-grade NAT address",
    ),
    (
        "http://224.0.0.1/",
        Category::Multicast,
        "224.0.0.1 is a multicast address",
    ),
    (
        "http://239.255.255.250/",
        Category::Multicast,
        "239.255.255.250 is a multicast address",
    ),
    (
        "http://255.255.255.255/",
        Category::Broadcast,
        "255.255.255.255 is the broadcast address",
    ),
    (
        "http://192.0.0.8/",
        Category::Reserved,
        "192.0.0.8 is a reserved address (IETF protocol assignments)",
    ),
    (
        "http://192.0.2.10/",
        Category::Documentation,
        "192.0.2.10 is a documentation address",
    ),
    (
        "http://198.18.0.1/",
        Category::Benchmarking,
        "198.18.0.1 is a benchmarking address",
    ),
    (
        "http://198.19.255.255/",
        Category::Benchmarking,
        "198.19.255.255 is a benchmarking address",
    ),
    (
        "http://198.51.100.7/",
        Category::Documentation,
        "198.51.100.7 is a documentation address",
    ),
    (
        "http://203.0.113.9/",
        Category::Documentation,
        "203.0.113.9 is a documentation address",
    ),
    (
        "http://240.0.0.1/",
        Category::Reserved,
        "240.0.0.1 is a reserved address (future use)",
    ),
    // Other spellings of an IPv4 address, which the url crate turns into the address.
    (
        "http://2130706433/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://0x7f000001/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://0177.0.0.1/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://017700000001/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://127.1/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://0x7f.1/",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://127.0.0.1./",
        Category::Loopback,
        "127.0.0.1 is a loopback address",
    ),
    (
        "http://2852039166/",
        Category::LinkLocal,
        "169.254.169.254 is a link-local address (cloud metadata)",
    ),
    (
        "http://0xa9.0xfe.0xa9.0xfe/",
        Category::LinkLocal,
        "169.254.169.254 is a link-local address (cloud metadata)",
    ),
    (
        "http://169.254.43518/",
        Category::LinkLocal,
        "169.254.169.254 is a link-local address (cloud metadata)",
    ),
    (
        "http://012.0.0.1/",
        Category::Private,
        "10.0.0.1 is a private address",
    ),
    // IPv6 judged by the IPv4 address it carries.
    (
        "http://[::ffff:127.0.0.1]/",
        Category::Loopback,
        "::ffff:127.0.0.1 carries 127.0.0.1, a loopback address",
    ),
    (
        "http://[0:0:0:0:0:ffff:7f00:1]/",
        Category::Loopback,
        "::ffff:127.0.0.1 carries 127.0.0.1, a loopback address",
    ),
    (
        "http://[::ffff:10.0.0.1]/",
        Category::Private,
        "::ffff:10.0.0.1 carries 10.0.0.1, a private address",
    ),
    (
        "http://[::ffff:169.254.169.254]/",
        Category::LinkLocal,
        "::ffff:169.254.169.254 carries 169.254.169.254, a link-local address (cloud metadata)",
    ),
    (
        "http://[64:ff9b::a9fe:a9fe]/",
        Category::LinkLocal,
        "64:ff9b::a9fe:a9fe carries 169.254.169.254, a link-local address (cloud metadata)",
    ),
    // IPv6 that tunnels to IPv4, refused outright.
    (
        "http://[::127.0.0.1]/",
        Category::Ipv4Tunnel,
        "::7f00:1 is an IPv4-compatible address (deprecated)",
    ),
    (
        "http://[2002:7f00:1::1]/",
        Category::Ipv4Tunnel,
        "2002:7f00:1::1 is a 6to4 address (deprecated IPv4 tunnel)",
    ),
    (
        "http://[2002:5db8:d822::1]/",
        Category::Ipv4Tunnel,
        "2002:5db8:d822::1 is a 6to4 address (deprecated IPv4 tunnel)",
    ),
    (
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        Category::Ipv4Tunnel,
        "2001:0:4136:e378:8000:63bf:3fff:fdd2 is a Teredo address (IPv4 tunnel)",
    ),
    (
        "http://[64:ff9b:1::a00:1]/",
        Category::Ipv4Tunnel,
        "64:ff9b:1::a00:1 is a local-use NAT64 address",
    ),
    // Other IPv6.
    (
        "http://[::]/",
        Category::Unspecified,
        ":: is an unspecified address",
    ),
    (
        "http://[fe80::1]/",
        Category::LinkLocal,
        "fe80::1 is a link-local address",
    ),
    (
        "http://[fc00::1]/",
        Category::Private,
        "fc00::1 is a private address (unique local)",
    ),
    (
        "http://[fd00:ec2::254]/",
        Category::Private,
        "fd00:ec2::254 is a private address (unique local)",
    ),
    (
        "http://[fec0::1]/",
        Category::Private,
        "fec0::1 is a private address (site-local, deprecated)",
    ),
    (
        "http://[ff02::1]/",
        Category::Multicast,
        "ff02::1 is a multicast address",
    ),
    (
        "http://[2001:db8::1]/",
        Category::Documentation,
        "2001:db8::1 is a documentation address",
    ),
    (
        "http://[3fff::1]/",
        Category::Documentation,
        "3fff::1 is a documentation address",
    ),
    (
        "http://[100::1]/",
        Category::Reserved,
        "100::1 is a reserved address (discard only)",
    ),
    (
        "http://[2001:2::1]/",
        Category::Reserved,
        "2001:2::1 is a reserved address (IETF protocol assignments)",
    ),
    (
        "http://[2001:1ff:ffff::1]/",
        Category::Reserved,
        "2001:1ff:ffff::1 is a reserved address (IETF protocol assignments)",
    ),
    (
        "http://[fe7f::1]/",
        Category::Reserved,
        "fe7f::1 is a reserved address (outside global unicast, 2000::/3)",
    ),
    (
        "http://[4000::1]/",
        Category::Reserved,
        "4000::1 is a reserved address (outside global unicast, 2000::/3)",
    ),
];

/// URLs the default policy lets through: public addresses, some just outside a refused block,
/// and names (judged when they are resolved).
const PASSED: &[&str] = &[
    "http://93.184.216.34/",
    "https://1.1.1.1/",
    "http://8.8.8.8:53/",
    "http://[2606:4700::1111]/",
    "http://[2a00:1450:4001:81c::200e]/",
    "http://[::ffff:93.184.216.34]/",
    "http://[64:ff9b::5db8:d822]/",
    "http://11.0.0.1/",
    "http://100.63.255.255/",
    "http://100.128.0.1/",
    "http://126.255.255.255/",
    "http://128.0.0.1/",
    "http://169.255.0.1/",
    "http://172.15.255.255/",
    "http://172.32.0.1/",
    "http://192.169.0.1/",
    "http://198.20.0.1/",
    "http://223.255.255.255/",
    "http://[2001:200::1]/",
    "http://[3fff:1000::1]/",
    "http://1572395042/",
    "https://example.com/",
    "http://localhost:8080/",
];

#[test]
fn the_default_policy_refuses_every_internal_range_and_says_why() {
    let policy = Policy::default();
    for &(text, category, message) in REFUSED {
        let refused = policy
            .check_url(&url(text))
            .expect_err(&format!("{text} must be refused"));
        assert_eq!(refused.category(), category, "{text}");
        assert_eq!(refused.to_string(), message, "{text}");
        assert_eq!(
            classify(refused.address()).map(|r| r.category()),
            Some(category),
            "{text}"
        );
    }
}

#[test]
fn the_default_policy_passes_public_addresses_and_names() {
    let policy = Policy::default();
    for &text in PASSED {
        assert_eq!(policy.check_url(&url(text)), Ok(()), "{text}");
    }
}

#[test]
fn allowed_blocks_open_exactly_what_they_contain() {
    let blocks = ["10.1.2.0/24", "127.0.0.1/32", "::1/128"].map(|b| parse_block(b).unwrap());
    let policy = Policy::allowing(blocks);

    for text in [
        "http://10.1.2.3/",
        "http://10.1.2.255/",
        "http://127.0.0.1:9000/",
        "http://[::1]:9000/",
        "http://2130706433/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.1.2.3]/",
        "http://[64:ff9b::a01:203]/",
    ] {
        assert_eq!(policy.check_url(&url(text)), Ok(()), "{text}");
    }
    for (text, message) in [
        ("http://10.1.3.1/", "10.1.3.1 is a private address"),
        ("http://127.0.0.2/", "127.0.0.2 is a loopback address"),
        (
            "http://169.254.169.254/",
            "169.254.169.254 is a link-local address (cloud metadata)",
        ),
        (
            "http://[::ffff:10.1.3.1]/",
            "::ffff:10.1.3.1 carries 10.1.3.1, a private address",
        ),
        ("http://[fe80::1]/", "fe80::1 is a link-local address"),
    ] {
        let refused = policy
            .check_url(&url(text))
            .expect_err(&format!("{text} must stay refused"));
        assert_eq!(refused.to_string(), message, "{text}");
    }
}

#[test]
fn the_loopback_blocks_allow_this_machine_only() {
    let policy = Policy::allowing(LOOPBACK);

    for text in [
        "http://127.0.0.1/",
        "http://127.0.0.53/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        assert_eq!(policy.check_url(&url(text)), Ok(()), "{text}");
    }
    for text in [
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://0.0.0.0/",
        "http://[::]/",
    ] {
        assert!(policy.check_url(&url(text)).is_err(), "{text}");
    }
}

#[test]
fn allow_list_entries_are_cidr_blocks_or_addresses() {
    let parsed = |text: &str| parse_block(text).map(|b| b.to_string());

    assert_eq!(parsed("10.1.2.0/24").unwrap(), "10.1.2.0/24");
    assert_eq!(parsed(" 10.1.2.3/24 ").unwrap(), "10.1.2.0/24");
    assert_eq!(parsed("127.0.0.1").unwrap(), "127.0.0.1/32");
    assert_eq!(parsed("::1/128").unwrap(), "::1/128");
    assert_eq!(parsed("fd00::1").unwrap(), "fd00::1/128");
    for bad in ["10.0.0.0/33", "10.0.0/8", "localhost", "", "10.0.0.0/8/8"] {
        let err = parsed(bad).expect_err(bad);
        assert!(
            err.to_string().contains("is not a CIDR block"),
            "{bad}: {err}"
        );
    }
    let block: IpNet = "10.0.0.0/8".parse().unwrap();
    assert_eq!(Policy::allowing([block]).allowed(), &[block]);
}
