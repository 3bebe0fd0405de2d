//! A loopback HTTP server standing in for the services that http nodes call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) path: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) authorization: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Value,
}

/// How the receiver answers a request: a status, after a pause. It is given the request and
/// how many earlier requests carried the same idempotency key.
pub(crate) type Behaviour = Arc<dyn Fn(&Received, usize) -> (u16, Duration) + Send + Sync>;

/// Records every request and answers as its behaviour says.
pub(crate) struct Receiver {
    pub(crate) address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    /// Answers every request with `status` at once.
    pub(crate) async fn start(status: u16) -> Self {
        Self::start_with(Arc::new(move |_, _| (status, Duration::ZERO))).await
    }

    pub(crate) async fn start_with(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let received: Arc<Mutex<Vec<Received>>> = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = Arc::clone(&log);
                let behaviour = Arc::clone(&behaviour);
                tokio::spawn(async move {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let (mut length, mut key, mut authorization) = (0usize, None, None);
                    let (mut traceparent, mut content_type) = (None, None);
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => length = value.trim().parse().unwrap_or(0),
                            "idempotency-key" => key = Some(value.trim().to_owned()),
                            "authorization" => authorization = Some(value.trim().to_owned()),
                            "traceparent" => traceparent = Some(value.trim().to_owned()),
                            "content-type" => content_type = Some(value.trim().to_owned()),
                            _ => {}
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let request = Received {
                        path,
                        idempotency_key: key,
                        authorization,
                        traceparent,
                        content_type,
                        body,
                    };
                    let (status, pause) = {
                        let mut log = log.lock().unwrap();
                        let seen = log
                            .iter()
                            .filter(|r| r.idempotency_key == request.idempotency_key)
                            .count();
                        log.push(request.clone());
                        behaviour(&request, seen)
                    };
                    tokio::time::sleep(pause).await;
                    // Like many real services, it echoes the credentials it was sent.
                    let answer = match &request.authorization {
                        Some(sent) => serde_json::json!({"ok": true, "authorization": sent}),
                        None => serde_json::json!({"ok": true}),
                    }
                    .to_string();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = reader.get_mut().write_all(reply.as_bytes()).await;
                });
            }
        });
        Self { address, received }
    }

    /// Waits until at least `count` requests have arrived (a node is in flight), for at most
    /// thirty seconds.
    pub(crate) async fn wait_for_requests(&self, count: usize) {
        let arrived = async {
            while self.received.lock().unwrap().len() < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), arrived)
            .await
            .expect("the requests arrived");
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
