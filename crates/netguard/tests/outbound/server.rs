//! A small HTTP/1.1 server on a loopback address that counts the connections it accepts,
//! records the path of each request, and answers as the test says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// An answer: a status and, for redirects, a `Location`.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
}

impl Reply {
    pub(crate) fn ok() -> Self {
        Self {
            status: 200,
            location: None,
        }
    }

    pub(crate) fn found(location: impl Into<String>) -> Self {
        Self {
            status: 302,
            location: Some(location.into()),
        }
    }
}

/// Chooses the answer from the request's path and the server's own address.
type Answer = Arc<dyn Fn(&str, SocketAddr) -> Reply + Send + Sync>;

pub(crate) struct Server {
    pub(crate) address: SocketAddr,
    /// The client address of every connection accepted.
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Answers every request with 200.
    pub(crate) async fn ok(ip: &str) -> Self {
        Self::start(ip, |_, _| Reply::ok()).await
    }

    /// Listens on a free port of `ip`, which must be a loopback address.
    pub(crate) async fn start(
        ip: &str,
        answer: impl Fn(&str, SocketAddr) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        assert!(address.ip().is_loopback(), "test servers stay on loopback");
        let answer: Answer = Arc::new(answer);
        let peers = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (seen, logged) = (Arc::clone(&peers), Arc::clone(&paths));
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                seen.lock().unwrap().push(peer);
                let (logged, answer) = (Arc::clone(&logged), Arc::clone(&answer));
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    // The clients here send no bodies, so the request ends at the blank line.
                    loop {
                        let mut header = String::new();
                        match reader.read_line(&mut header).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if header.trim_end().is_empty() => break,
                            Ok(_) => {}
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    logged.lock().unwrap().push(path.clone());
                    let reply = answer(&path, address);
                    let location = reply
                        .location
                        .map(|l| format!("location: {l}\r\n"))
                        .unwrap_or_default();
                    let response = format!(
                        "HTTP/1.1 {} X\r\n{location}content-length: 2\r\n\
                         connection: close\r\n\r\nok",
                        reply.status
                    );
                    let _ = reader.get_mut().write_all(response.as_bytes()).await;
                });
            }
        });
        Self {
            address,
            peers,
            paths,
        }
    }

    /// Connections made to the server so far, including any still waiting to be accepted: a
    /// probe connection goes to the back of the queue, and once it is accepted, so is every
    /// connection made before it.
    pub(crate) async fn connections(&self) -> usize {
        let probe = TcpStream::connect(self.address).await.unwrap();
        let own = probe.local_addr().unwrap();
        let arrived = async {
            while !self.peers.lock().unwrap().contains(&own) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .expect("the probe connection was accepted");
        let mut peers = self.peers.lock().unwrap();
        peers.retain(|peer| *peer != own);
        peers.len()
    }

    /// The paths requested so far, in order.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}
