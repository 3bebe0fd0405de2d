//! Running the binary and talking to it over loopback.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The binary under test, with no database configured unless a test adds one.
pub(crate) fn quantumflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quantumflow"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("QUANTUMFLOW_DATA_DIR")
        .env_remove("QUANTUMFLOW_ALLOW_OUTBOUND")
        .env_remove("QUANTUMFLOW_CREDENTIAL_KEYS")
        // Nothing balances load in front of the tests' servers, so none waits before it stops
        // accepting; a test of that delay passes --shutdown-delay.
        .env("QUANTUMFLOW_SHUTDOWN_DELAY", "0")
        .env("RUST_LOG", "warn");
    cmd.stdin(Stdio::null());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run quantumflow")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A loopback address nothing listens on right now.
pub(crate) fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A scratch directory that the private server's account can enter even when tests run as root.
pub(crate) fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `GET path` over HTTP/1.1; `None` while nothing answers.
pub(crate) async fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The API token of the `admin` user that `cluster::admin` creates. Tests choose it, as a
/// client keeps one, so requests can carry it without reading it back.
pub(crate) const ADMIN_TOKEN: &str =
    "qf_00000000000000000000000000000000000000000000000000000000000000ad";

/// Sends one HTTP/1.1 request with a JSON body and returns the status and parsed body. Without
/// an `Authorization` among `headers`, the request carries [`ADMIN_TOKEN`].
pub(crate) async fn send(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, _, body) = exchange(address, method, path, headers, body).await;
    (status, body)
}

/// As [`send`], also returning the response's header lines, names in lowercase.
pub(crate) async fn exchange(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = body.map(ToString::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
    {
        request.push_str(&format!("Authorization: Bearer {ADMIN_TOKEN}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, raw) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let header_lines = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (
        status,
        header_lines,
        serde_json::from_str(raw).unwrap_or(serde_json::Value::Null),
    )
}

/// Waits until `/readyz` answers 200, or panics with the process's output.
pub(crate) async fn wait_ready(child: &mut Child, address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("quantumflow exited early with {status}");
        }
        if let Some((200, _)) = get(address, "/readyz").await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("quantumflow did not become ready at {address}");
}

/// Sends SIGTERM and waits for the exit status.
pub(crate) fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "quantumflow ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
