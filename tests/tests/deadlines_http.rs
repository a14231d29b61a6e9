//! Deadlines and the connection cap of the registry, jobs and logging ports, over raw
//! sockets: a client that dribbles a head, stalls a body or idles on keep-alive is cut
//! off after its deadline, and past the cap the oldest idle connection makes room for a
//! new one.
//! The deadlines are set short here; each test checks the socket was closed, not how
//! fast.

use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::config::ConnectionLimits;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The three servers with one-second deadlines and a cap of `max_connections`.
async fn start(head: Duration, max_connections: usize) -> App {
    let config = Config {
        connections: ConnectionLimits {
            head_timeout: head,
            idle_timeout: Duration::from_secs(1),
            keep_alive: Duration::from_secs(1),
            max_connections,
            ..ConnectionLimits::default()
        },
        ..Config::ephemeral()
    };
    App::start(
        config,
        &[ServerKind::Registry, ServerKind::Jobs, ServerKind::Logging],
    )
    .await
    .unwrap()
}

/// Read until the server closes the connection (or resets it); what it sent meanwhile.
/// Panics if it is still open after `limit`, which is far beyond every deadline here.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> String {
    let mut seen = Vec::new();
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .expect("the server kept the connection open past its deadline");
    String::from_utf8_lossy(&seen).into_owned()
}

fn address(app: &App, kind: ServerKind) -> std::net::SocketAddr {
    app.addr(kind).unwrap()
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_head_deadline() {
    let app = start(Duration::from_secs(1), 100).await;
    for kind in [ServerKind::Registry, ServerKind::Jobs, ServerKind::Logging] {
        let mut stream = TcpStream::connect(address(&app, kind)).await.unwrap();
        let started = Instant::now();
        let head =
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let dribble = async {
            for byte in head.iter() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        // Forty bytes at ten a second outlast the one-second deadline four times over; the
        // server cuts in while bytes are still coming.
        tokio::time::timeout(Duration::from_secs(10), dribble)
            .await
            .unwrap();
        let answer = closed_within(&mut stream, Duration::from_secs(5)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "{} closed before its deadline",
            kind.name()
        );
        assert!(!answer.contains("200 OK"), "{}: {answer}", kind.name());
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_body_and_an_idle_keep_alive_connection_are_closed() {
    let app = start(Duration::from_secs(1), 100).await;
    let logging = address(&app, ServerKind::Logging);
    let mut stream = TcpStream::connect(logging).await.unwrap();
    stream
        .write_all(
            b"POST /logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 200\r\n\r\n{\"level\":\"info\",",
        )
        .await
        .unwrap();
    let answer = closed_within(&mut stream, Duration::from_secs(8)).await;
    assert!(!answer.starts_with("HTTP/1.1 2"), "{answer}");

    let registry = address(&app, ServerKind::Registry);
    let mut stream = TcpStream::connect(registry).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    closed_within(&mut stream, Duration::from_secs(5)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_the_oldest_idle_connection_makes_room() {
    // A long head deadline, so the three idle connections keep their slots.
    let app = start(Duration::from_secs(60), 3).await;
    let registry = address(&app, ServerKind::Registry);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(registry).await.unwrap());
        // Accepted in this order: the first is the oldest.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut fourth = TcpStream::connect(registry).await.unwrap();
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), fourth.read_exact(&mut answer))
        .await
        .expect("the newcomer is served in the oldest one's place")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    closed_within(&mut idle[0], Duration::from_secs(5)).await;
    // The younger ones keep their slots.
    for younger in &mut idle[1..] {
        let mut byte = [0u8; 1];
        let still = tokio::time::timeout(Duration::from_millis(300), younger.read(&mut byte));
        assert!(still.await.is_err(), "a younger idle connection was closed");
    }
    app.shutdown().await;
}
