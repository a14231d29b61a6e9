//! The gateway port's deadlines and connection cap, end to end over raw sockets, on both
//! of its paths: the HTTP/1.1 lane (proxied requests) and the general-purpose server it
//! hands the rest to (the gateway's own routes, HTTP/1.0, large bodies). The limits are
//! set to a second, so each test checks that a stalled client's connection is closed,
//! no earlier than its deadline and well within a generous bound.

use axum::body::Bytes;
use axum::extract::Request;
use axum::Router;
use omc_orchestra::registry::Registration;
use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::config::ConnectionLimits;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every deadline of these tests.
const DEADLINE: Duration = Duration::from_secs(1);

/// How long a test waits for the gateway to close a connection: far past the deadline.
const BOUND: Duration = Duration::from_secs(5);

/// The upstream's large answer: more than the sockets on its way buffer.
const BIG: usize = 16 << 20;

/// An upstream answering `/big` with [`BIG`] bytes and anything else with `ok`, once it
/// has read the request's body.
async fn upstream() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = Router::new().fallback(|request: Request| async move {
        if request.uri().path().ends_with("/big") {
            return Bytes::from(vec![b'x'; BIG]);
        }
        let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        Bytes::from_static(b"ok")
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

fn limits(max_connections: usize) -> ConnectionLimits {
    ConnectionLimits {
        head_timeout: DEADLINE,
        idle_timeout: DEADLINE,
        keep_alive: DEADLINE,
        max_connections,
        ..ConnectionLimits::default()
    }
}

/// A gateway with `limits` routing `/api/slow/...` to an [`upstream`]; its address.
async fn gateway(limits: ConnectionLimits) -> (App, String) {
    let config = Config {
        connections: limits,
        ..Config::ephemeral()
    };
    let app = App::start(config, &[ServerKind::Gateway]).await.unwrap();
    app.backends()
        .registry
        .register(Registration::new("slow", "127.0.0.1", upstream().await))
        .await
        .unwrap();
    let addr = app
        .url(ServerKind::Gateway)
        .trim_start_matches("http://")
        .to_owned();
    omc_orchestra::testkit::eventually(
        "the gateway routes to the upstream",
        Duration::from_secs(10),
        || async {
            let mut stream = TcpStream::connect(&addr).await.ok()?;
            let request = "GET /api/slow/ready HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.ok()?;
            answer.starts_with(b"HTTP/1.1 200").then_some(())
        },
    )
    .await;
    (app, addr)
}

/// Read until the gateway closes the connection (its end, or a reset); what came first.
/// Fails when the connection is still open after [`BOUND`].
async fn until_closed(reader: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let read_all = async {
        let mut chunk = vec![0; 64 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(BOUND, read_all)
        .await
        .unwrap_or_else(|_| panic!("the connection is still open after {BOUND:?}"));
    received
}

/// Read one answer whose body has a `Content-Length`; its status.
async fn answer(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before an answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("an answer without a length: {head}"));
    while buf.len() < end + length {
        let mut chunk = [0; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap()
}

/// Send `stream` a request head a byte every 200 ms (a reset after each read would keep
/// it open for ever); checks the gateway closes it after its head deadline.
async fn dribble_head(stream: TcpStream, target: &str, started: Instant) {
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: gw\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(40)
    );
    let (mut reader, mut writer) = stream.into_split();
    let dribbler = tokio::spawn(async move {
        for byte in head.into_bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let received = until_closed(&mut reader).await;
    assert!(started.elapsed() >= DEADLINE, "closed before the deadline");
    assert!(!dribbler.is_finished(), "the whole head went out");
    dribbler.abort();
    assert!(
        !received.starts_with(b"HTTP/1.1 2"),
        "{}",
        String::from_utf8_lossy(&received)
    );
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_is_cut_at_its_deadline() {
    let (app, addr) = gateway(limits(100)).await;
    // The lane reads every head first.
    let started = Instant::now();
    let stream = TcpStream::connect(&addr).await.unwrap();
    dribble_head(stream, "/api/slow/dribbled", started).await;
    // The gateway's own route hands the connection to the general-purpose server, which
    // reads the next head.
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(answer(&mut stream).await, 200);
    dribble_head(stream, "/health", started).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_after_the_idle_deadline() {
    let (app, addr) = gateway(limits(100)).await;
    // A small body is read by the lane; a large one is streamed by the other path.
    for length in [100, 1 << 20] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /api/slow/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: {length}\r\n\r\nabc"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let received = until_closed(&mut stream).await;
        assert!(
            started.elapsed() >= DEADLINE,
            "{length}: closed before the deadline"
        );
        assert!(
            !received.starts_with(b"HTTP/1.1 2"),
            "{length}: {}",
            String::from_utf8_lossy(&received)
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (app, addr) = gateway(limits(100)).await;
    for target in ["/api/slow/once", "/health"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET {target} HTTP/1.1\r\nHost: gw\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(answer(&mut stream).await, 200, "{target}");
        let received = until_closed(&mut stream).await;
        assert!(started.elapsed() >= DEADLINE, "{target}: closed too early");
        assert!(received.is_empty(), "{target}: more than one answer");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_the_oldest_keep_alive_connection_makes_room() {
    let (app, addr) = gateway(ConnectionLimits {
        keep_alive: Duration::from_secs(60),
        ..limits(3)
    })
    .await;
    let request = b"GET /api/slow/held HTTP/1.1\r\nHost: gw\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        assert_eq!(answer(&mut stream).await, 200);
        held.push(stream);
    }
    // All three idle between requests: the oldest goes, and the fourth is served.
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth.write_all(request).await.unwrap();
    let status = tokio::time::timeout(BOUND, answer(&mut fourth))
        .await
        .expect("served in the oldest connection's place");
    assert_eq!(status, 200);
    let closed = tokio::time::timeout(BOUND, until_closed(&mut held[0])).await;
    assert_eq!(closed.expect("the oldest was closed"), b"");
    for younger in &mut held[1..] {
        younger.write_all(request).await.unwrap();
        assert_eq!(
            answer(younger).await,
            200,
            "a younger connection still serves"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_a_busy_connection_finishes_its_request_before_making_room() {
    let (app, addr) = gateway(ConnectionLimits {
        keep_alive: Duration::from_secs(60),
        ..limits(3)
    })
    .await;
    // Three requests whose bodies are half sent: every connection is busy.
    let head = b"POST /api/slow/busy HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\nhalf-";
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        busy.push(stream);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth
        .write_all(b"GET /api/slow/new HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0; 1];
    let early = tokio::time::timeout(Duration::from_millis(400), fourth.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "served while every connection was busy: {early:?}"
    );
    // The oldest finishes its request, answered whole, then makes room.
    busy[0].write_all(b"done!").await.unwrap();
    assert_eq!(
        answer(&mut busy[0]).await,
        200,
        "the busy request was not cut"
    );
    let status = tokio::time::timeout(BOUND, answer(&mut fourth))
        .await
        .expect("served once the oldest finished");
    assert_eq!(status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_answer_is_dropped() {
    let (app, addr) = gateway(limits(100)).await;
    // The lane serves HTTP/1.1; the other path, HTTP/1.0.
    for version in ["1.1", "1.0"] {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET /api/slow/big HTTP/{version}\r\nHost: gw\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // Not reading, for longer than the idle deadline: the gateway's writes block.
        tokio::time::sleep(3 * DEADLINE).await;
        let received = until_closed(&mut stream).await;
        let status = String::from_utf8_lossy(&received[..received.len().min(13)]).to_string();
        assert!(
            status.ends_with(" 200 ") || received.is_empty(),
            "{version}: {status}"
        );
        assert!(received.len() < BIG, "{version}: the whole answer went out");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stalls_or_breaks_off_is_the_clients_fault_not_the_upstreams() {
    let (app, addr) = gateway(limits(100)).await;
    // Large bodies, so the gateway streams them upstream as they come.
    for _ in 0..3 {
        let mut stalled = TcpStream::connect(&addr).await.unwrap();
        let head = "POST /api/slow/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 1048576\r\n\r\n";
        stalled.write_all(head.as_bytes()).await.unwrap();
        stalled.write_all(&vec![b'x'; 100_000]).await.unwrap();
        let received = until_closed(&mut stalled).await;
        let text = String::from_utf8_lossy(&received);
        assert!(text.starts_with("HTTP/1.1 408"), "a stalled body: {text}");

        let mut broken = TcpStream::connect(&addr).await.unwrap();
        broken.write_all(head.as_bytes()).await.unwrap();
        broken.write_all(&vec![b'x'; 100_000]).await.unwrap();
        drop(broken);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Six failed bodies, more than the five consecutive failures that open a breaker:
    // the upstream's breaker heard of none of them.
    let url = format!("http://{addr}/gateway/breakers");
    let breakers: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    for breaker in breakers.as_array().unwrap() {
        assert_eq!(breaker["consecutiveFailures"], 0, "{breaker}");
        assert_eq!(breaker["windowFailures"], 0, "{breaker}");
        assert_eq!(breaker["phase"], "closed", "{breaker}");
    }
    app.shutdown().await;
}
