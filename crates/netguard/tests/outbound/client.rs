//! The guarded client, end to end through reqwest, against servers on 127.0.0.1 and 127.0.0.2.
//!
//! 127.0.0.2 stands in for an internal service: it is loopback, so a test can watch it and
//! see that nothing connected, yet the policies here refuse it (they allow 127.0.0.1 only).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use quantumflow_netguard::{
    Category, Client, Error, MAX_REDIRECTS, Policy, Refused, find_refusal, parse_block,
};
use reqwest::Method;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::server::{Reply, Server};

/// Resolves names from a fixed table, never through DNS, and records every name asked.
#[derive(Clone, Default)]
struct Names {
    table: Arc<HashMap<String, Vec<SocketAddr>>>,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Names {
    fn new(entries: &[(&str, &[SocketAddr])]) -> Self {
        let table = entries
            .iter()
            .map(|(name, addresses)| ((*name).to_owned(), addresses.to_vec()))
            .collect();
        Self {
            table: Arc::new(table),
            asked: Arc::default(),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Resolve for Names {
    fn resolve(&self, name: Name) -> Resolving {
        self.asked.lock().unwrap().push(name.as_str().to_owned());
        let found = self.table.get(name.as_str()).cloned();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = found.ok_or_else(|| format!("{name} is not in the test's table"))?;
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

/// The client under test. It connects from 127.0.0.1: the kernel routes nothing else from
/// there, so whatever the guard lets through, no packet leaves the machine.
fn client(policy: Policy, names: &Names) -> Client {
    Client::builder(policy)
        .resolver(names.clone())
        .local_address(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .build()
        .unwrap()
}

fn only_127_0_0_1() -> Policy {
    Policy::allowing([parse_block("127.0.0.1/32").unwrap()])
}

fn private(port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], port))
}

async fn get(client: &Client, url: &str) -> Result<reqwest::Response, reqwest::Error> {
    client.request(Method::GET, url).unwrap().send().await
}

/// The refusal that stopped a request, after checking the message it gives.
fn refused(sent: Result<reqwest::Response, reqwest::Error>, message: &str) -> Refused {
    let err = sent.expect_err(message);
    let refused = find_refusal(&err).unwrap_or_else(|| panic!("not a refusal: {err:?}"));
    assert_eq!(refused.to_string(), message);
    refused.clone()
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_the_server_sees_nothing() {
    let server = Server::ok("127.0.0.1").await;
    let names = Names::new(&[("service.test", &[server.address])]);
    let client = client(Policy::default(), &names);
    let port = server.address.port();

    let literals = [
        format!("http://127.0.0.1:{port}/literal"),
        format!("http://2130706433:{port}/decimal"),
        format!("http://0x7f000001:{port}/hex"),
        format!("http://127.1:{port}/short"),
        format!("http://[::ffff:127.0.0.1]:{port}/mapped"),
    ];
    let refused_literals: Vec<_> = literals
        .iter()
        .map(|url| client.request(Method::GET, url).map(drop))
        .collect();
    let by_name = get(&client, &format!("http://service.test:{port}/name")).await;

    for (url, result) in literals.iter().zip(&refused_literals) {
        match result {
            Err(Error::Refused(Refused::Address(address))) => {
                assert_eq!(address.category(), Category::Loopback, "{url}");
            }
            other => panic!("{url} was not refused: {other:?}"),
        }
    }
    assert_eq!(
        refused_literals[1].as_ref().unwrap_err().to_string(),
        "127.0.0.1 is a loopback address"
    );
    refused(
        by_name,
        "service.test resolves only to refused addresses: 127.0.0.1 is a loopback address",
    );
    assert_eq!(names.asked(), ["service.test"]);
    assert_eq!(server.connections().await, 0);
    assert!(server.paths().is_empty());
}

#[tokio::test]
async fn loopback_on_the_allow_list_reaches_the_server() {
    let server = Server::ok("127.0.0.1").await;
    let names = Names::new(&[("service.test", &[server.address])]);
    let client = client(only_127_0_0_1(), &names);
    let port = server.address.port();

    let literal = get(&client, &format!("http://127.0.0.1:{port}/literal")).await;
    let decimal = get(&client, &format!("http://2130706433:{port}/decimal")).await;
    let by_name = get(&client, &format!("http://service.test:{port}/name")).await;

    for response in [literal, decimal, by_name] {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.remote_addr(), Some(server.address));
    }
    assert_eq!(server.paths(), ["/literal", "/decimal", "/name"]);
}

#[tokio::test]
async fn a_name_resolving_to_refused_addresses_fails_before_any_connection() {
    let internal = Server::ok("127.0.0.2").await;
    let names = Names::new(&[
        ("intranet.test", &[private(80)]),
        ("internal.test", &[internal.address]),
    ]);
    let client = client(only_127_0_0_1(), &names);

    let intranet = get(&client, "http://intranet.test/").await;
    let internal_by_name = get(
        &client,
        &format!("http://internal.test:{}/", internal.address.port()),
    )
    .await;

    refused(
        intranet,
        "intranet.test resolves only to refused addresses: 10.0.0.1 is a private address",
    );
    let message =
        "internal.test resolves only to refused addresses: 127.0.0.2 is a loopback address";
    let Refused::Name { addresses, .. } = refused(internal_by_name, message) else {
        panic!("not refused as a name");
    };
    assert_eq!(addresses[0].category(), Category::Loopback);
    assert_eq!(names.asked(), ["intranet.test", "internal.test"]);
    assert_eq!(internal.connections().await, 0);
}

#[tokio::test]
async fn redirects_to_refused_addresses_are_refused_at_the_hop() {
    let internal = Server::ok("127.0.0.2").await;
    let internal_url = format!("http://{}/secret", internal.address);
    let server = Server::start("127.0.0.1", move |path, own| match path {
        "/to-private" => Reply::found("http://10.0.0.1/"),
        "/to-metadata" => Reply::found("http://169.254.169.254/latest/meta-data/"),
        "/to-mapped" => Reply::found("http://[::ffff:10.0.0.1]/admin"),
        "/to-name" => Reply::found("http://intranet.test/"),
        "/to-internal" => Reply::found(internal_url.clone()),
        "/to-self" => Reply::found(format!("http://{own}/landed")),
        "/loop" => Reply::found("/loop"),
        _ => Reply::ok(),
    })
    .await;
    let names = Names::new(&[("intranet.test", &[private(80)])]);
    let client = client(only_127_0_0_1(), &names);
    let at = |path: &str| format!("http://{}{path}", server.address);

    let to_private = get(&client, &at("/to-private")).await;
    let to_metadata = get(&client, &at("/to-metadata")).await;
    let to_mapped = get(&client, &at("/to-mapped")).await;
    let to_name = get(&client, &at("/to-name")).await;
    let to_internal = get(&client, &at("/to-internal")).await;
    let to_self = get(&client, &at("/to-self")).await;
    let looping = get(&client, &at("/loop")).await;

    refused(
        to_private,
        "the redirect to http://10.0.0.1 was refused: 10.0.0.1 is a private address",
    );
    let message = "the redirect to http://169.254.169.254 was refused: \
                   169.254.169.254 is a link-local address (cloud metadata)";
    let Refused::Redirect { target, .. } = refused(to_metadata, message) else {
        panic!("not refused as a redirect");
    };
    assert_eq!(target.as_str(), "http://169.254.169.254/latest/meta-data/");
    refused(
        to_mapped,
        "the redirect to http://[::ffff:a00:1] was refused: \
         ::ffff:10.0.0.1 carries 10.0.0.1, a private address",
    );
    // A name is judged when it is resolved, at the hop that needs it.
    refused(
        to_name,
        "intranet.test resolves only to refused addresses: 10.0.0.1 is a private address",
    );
    refused(
        to_internal,
        &format!(
            "the redirect to http://{} was refused: 127.0.0.2 is a loopback address",
            internal.address
        ),
    );
    assert_eq!(
        to_self.unwrap().status(),
        200,
        "allowed redirects are followed"
    );
    let err = looping.expect_err("the redirect limit holds");
    assert!(err.is_redirect(), "{err:?}");
    assert!(find_refusal(&err).is_none(), "{err:?}");

    let mut expected: Vec<String> = [
        "/to-private",
        "/to-metadata",
        "/to-mapped",
        "/to-name",
        "/to-internal",
        "/to-self",
        "/landed",
    ]
    .map(String::from)
    .into();
    // The first request and one per redirect followed.
    expected.extend(std::iter::repeat_n("/loop".to_owned(), 1 + MAX_REDIRECTS));
    assert_eq!(server.paths(), expected);
    assert_eq!(names.asked(), ["intranet.test"]);
    assert_eq!(internal.connections().await, 0);
}

#[tokio::test]
async fn a_name_with_refused_and_allowed_addresses_connects_only_to_the_allowed_one() {
    let allowed = Server::ok("127.0.0.1").await;
    let internal = Server::ok("127.0.0.2").await;
    // Refused addresses first: a connector that saw them would try them first, and
    // 127.0.0.2 would accept.
    let names = Names::new(&[(
        "mixed.test",
        &[internal.address, private(80), allowed.address],
    )]);
    let client = client(only_127_0_0_1(), &names);

    // No port in the URL, so each address keeps its own.
    let response = get(&client, "http://mixed.test/").await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.remote_addr(), Some(allowed.address));
    assert_eq!(allowed.paths(), ["/"]);
    assert_eq!(internal.connections().await, 0);
}
