//! The lane's deadlines over real loopback connections, on tokio's paused clock: the
//! clock jumps to the next timer whenever both ends wait, so the deadlines are checked to
//! the millisecond without the tests sleeping.

use super::*;
use crate::gateway::full_body;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SECOND: Duration = Duration::from_secs(1);

/// Length of the answer to `/big`: more than loopback's socket buffers hold.
const BIG: usize = 32 << 20;

/// Answers `/big` with [`BIG`] bytes, anything else with `ok`.
struct Fixed;

impl LaneService for Fixed {
    fn takes(&self, _head: &http::request::Parts) -> bool {
        true
    }

    async fn call(&self, request: Request<GatewayBody>, _peer: SocketAddr) -> (Answer, ProxyInfo) {
        let body = if request.uri().path() == "/big" {
            full_body(vec![b'x'; BIG])
        } else {
            full_body("ok")
        };
        (http::Response::new(body).into(), ProxyInfo::default())
    }

    async fn fallback(&self, _io: Rewind, _peer: SocketAddr) {}
}

fn options() -> LaneOptions {
    LaneOptions {
        keep_alive: 5 * SECOND,
        head_timeout: SECOND,
        idle_timeout: SECOND,
        ..LaneOptions::default()
    }
}

/// A client connection, and the lane serving its other end (done when it closed it).
async fn connection(options: LaneOptions) -> (TcpStream, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    let (stop, stopped) = watch::channel(false);
    let lane = tokio::spawn(async move {
        serve_lane(Arc::new(Fixed), server, peer, options, stopped).await;
        drop(stop);
    });
    (client, lane)
}

/// Send `bytes` one at a time, `pause` apart, until the lane closes the connection.
async fn dribble(client: &mut TcpStream, bytes: &[u8], pause: Duration, lane: &JoinHandle<()>) {
    for byte in bytes {
        if lane.is_finished() || client.write_all(&[*byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(pause).await;
    }
}

/// Read one `ok` answer (its head and two-byte body).
async fn read_ok(client: &mut TcpStream) {
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\nok") {
        let mut chunk = [0; 1024];
        let n = client.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the lane closed the connection before its answer");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

#[tokio::test(start_paused = true)]
async fn a_dribbled_head_is_cut_at_one_deadline() {
    let (mut client, lane) = connection(options()).await;
    let started = Instant::now();
    let head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(40));
    // A byte every 200 ms would keep a deadline reset by each read from ever passing.
    let pause = SECOND / 5;
    let ((), took) = tokio::join!(dribble(&mut client, head.as_bytes(), pause, &lane), async {
        while !lane.is_finished() {
            tokio::time::sleep(SECOND / 100).await;
        }
        started.elapsed()
    });
    assert!(
        took >= SECOND && took < SECOND + SECOND / 10,
        "closed after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_waits_keep_alive_not_the_head_deadline() {
    let (mut client, lane) = connection(options()).await;
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    read_ok(&mut client).await;
    let served = Instant::now();
    lane.await.unwrap();
    let took = served.elapsed();
    assert!(
        took >= 5 * SECOND && took < 5 * SECOND + SECOND / 10,
        "closed after {took:?}"
    );
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_body_may_take_long_but_not_pause_long() {
    let (mut client, lane) = connection(options()).await;
    // Six seconds of body, none of its pauses as long as the idle deadline.
    client
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    dribble(&mut client, b"0123456789", SECOND * 6 / 10, &lane).await;
    read_ok(&mut client).await;
    // A body that stops: cut an idle deadline after its last byte.
    client
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01")
        .await
        .unwrap();
    let stalled = Instant::now();
    lane.await.unwrap();
    let took = stalled.elapsed();
    assert!(
        took >= SECOND && took < SECOND + SECOND / 10,
        "closed after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_loses_its_answer() {
    let (mut client, lane) = connection(options()).await;
    client
        .write_all(b"GET /big HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let asked = Instant::now();
    lane.await.unwrap();
    let took = asked.elapsed();
    assert!(
        took >= SECOND && took < SECOND + SECOND / 10,
        "closed after {took:?}"
    );
    let mut received = Vec::new();
    client.read_to_end(&mut received).await.unwrap();
    assert!(received.len() < BIG, "the whole answer went out");
}

// On the real clock: the paused one would run ahead while the kernel's acknowledgements
// let the lane write again, and cut a connection that keeps reading.
#[tokio::test]
async fn a_slow_reader_gets_a_long_answer_whole() {
    let idle = SECOND / 2;
    let (mut client, lane) = connection(LaneOptions {
        idle_timeout: idle,
        ..options()
    })
    .await;
    client
        .write_all(b"GET /big HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    // At most 1 MiB each 50 ms: many times the idle deadline in all, no pause near it.
    let started = Instant::now();
    let mut received = 0;
    let mut chunk = vec![0; 1 << 20];
    loop {
        tokio::time::sleep(SECOND / 20).await;
        match client.read(&mut chunk).await.unwrap() {
            0 => break,
            n => received += n,
        }
    }
    lane.await.unwrap();
    assert!(received > BIG, "{received} bytes of a {BIG} byte body");
    assert!(started.elapsed() > idle);
}
