//! Hostile framing end to end, over raw sockets: requests whose body length two parsers
//! could read two ways get a 400 from the gateway's own HTTP/1.1 path (its JSON body
//! tells it from the fallback's) and a closed connection, and reach no upstream; upstream
//! answers framed that way are a 502, and their connection carries no further request.

mod gateway_support;

use gateway_support::{answering, read_request, start, with_gateway};
use omc_orchestra::gateway::GatewayConfig;
use omc_orchestra::registry::Registration;
use omc_orchestra_server::app::{App, ServerKind};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: answers by path, counts the requests it read, and those that came on a
/// connection after a misframed answer went out on it.
struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    after_misframed: Arc<AtomicUsize>,
    /// The body of the last request read.
    last_body: Arc<std::sync::Mutex<Vec<u8>>>,
}

/// The answer the raw upstream gives for `path`, and whether it is misframed.
fn answer_for(path: &str, body: &[u8]) -> (Vec<u8>, bool) {
    let misframed: &[u8] = match path.rsplit('/').next().unwrap_or("") {
        "plus" => b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        "spaced" => b"HTTP/1.1 200 OK\r\nContent-Length: 2 2\r\n\r\nok",
        "twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        "gzip-last" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        }
        // Chunked last, but the gzip coding under it would reach the client unlabelled.
        "gzip-first" => {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        }
        _ => {
            let mut answer =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            answer.extend_from_slice(body);
            return (answer, false);
        }
    };
    (misframed.to_vec(), true)
}

async fn raw_upstream() -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = RawUpstream {
        addr: listener.local_addr().unwrap(),
        requests: Arc::default(),
        after_misframed: Arc::default(),
        last_body: Arc::default(),
    };
    let (requests, after, last) = (
        upstream.requests.clone(),
        upstream.after_misframed.clone(),
        upstream.last_body.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (requests, after, last) = (requests.clone(), after.clone(), last.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut misframed_sent = false;
                while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                    requests.fetch_add(1, Ordering::SeqCst);
                    if misframed_sent {
                        after.fetch_add(1, Ordering::SeqCst);
                    }
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (answer, misframed) = answer_for(&path, &body);
                    *last.lock().unwrap() = body;
                    misframed_sent |= misframed;
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    upstream
}

/// A gateway with `raw` and the misframing services, all served by `upstream`; each
/// misframing service has a breaker of its own, so none opens for another's answers.
async fn gateway_with(upstream: &RawUpstream) -> App {
    let app = start(with_gateway(GatewayConfig::default()), None).await;
    for service in ["raw", "plus", "spaced", "twice", "gzip-last", "gzip-first"] {
        let registration = Registration::new(service, "127.0.0.1", upstream.addr.port());
        app.backends()
            .registry
            .register(registration)
            .await
            .unwrap();
    }
    let base = app.url(ServerKind::Gateway);
    answering(&format!("{base}/api/raw/ready")).await;
    app
}

/// Send `raw` on a new connection and read until the gateway closes it. The bound only
/// keeps a regression from hanging the suite: no answer in time fails the test.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(raw).await.unwrap();
    // The request ends here: a gateway waiting for more of it sees the end.
    client.shutdown().await.unwrap();
    let mut text = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut text));
    match read.await {
        Ok(Ok(_)) => String::from_utf8_lossy(&text).to_string(),
        Ok(Err(err)) => panic!("the connection broke instead of closing: {err}"),
        Err(_) => panic!(
            "the gateway neither answered nor closed: {}",
            String::from_utf8_lossy(&text)
        ),
    }
}

/// The requests each case sends, head and what follows, on `/api/raw/x`.
fn misframed_requests() -> Vec<(&'static str, Vec<u8>)> {
    let post = |lines: &str, rest: &[u8]| {
        let mut raw = format!("POST /api/raw/x HTTP/1.1\r\nHost: gw\r\n{lines}\r\n").into_bytes();
        raw.extend_from_slice(rest);
        raw
    };
    let chunked = |body: &[u8]| post("Transfer-Encoding: chunked\r\n", body);
    let long_line = [b"3;".as_slice(), &[b'x'; 5000], b"\r\nabc\r\n0\r\n\r\n"].concat();
    vec![
        (
            "a length with a plus sign",
            post("Content-Length: +3\r\n", b"abc"),
        ),
        (
            "a length with a minus sign",
            post("Content-Length: -3\r\n", b"abc"),
        ),
        (
            "a length with a space inside",
            post("Content-Length: 1 0\r\n", b"abcdefghij"),
        ),
        (
            "a length in non-ASCII digits",
            post("Content-Length: \u{663}\r\n", b"abc"),
        ),
        (
            "two unequal lengths",
            post("Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
        ),
        (
            "a length beside chunked",
            post(
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunked before another coding",
            post(
                "Transfer-Encoding: chunked, gzip\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "a coding under chunked",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "chunked twice",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                b"3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        (
            "a folded header line",
            post("X-Note: a\r\n folded\r\n", b""),
        ),
        (
            "bare LF line ends in the head",
            b"GET /api/raw/x HTTP/1.1\nHost: gw\n\n".to_vec(),
        ),
        (
            "a bare LF ending a header line",
            b"GET /api/raw/x HTTP/1.1\r\nHost: gw\nX-A: b\r\n\r\n".to_vec(),
        ),
        (
            "a bare LF ending a chunk line",
            chunked(b"3\nabc\r\n0\r\n\r\n"),
        ),
        (
            "a bare LF after chunk data",
            chunked(b"3\r\nabc\n0\r\n\r\n"),
        ),
        (
            "a chunk size past u64",
            chunked(b"10000000000000000\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "an LF in a chunk extension",
            chunked(b"3;a\nb\r\nabc\r\n0\r\n\r\n"),
        ),
        (
            "a CR in a chunk extension",
            chunked(b"3;a\rb\r\nabc\r\n0\r\n\r\n"),
        ),
        ("a chunk line over 4 KiB", chunked(&long_line)),
    ]
}

#[tokio::test]
async fn misframed_requests_are_refused_and_reach_no_upstream() {
    let upstream = raw_upstream().await;
    let app = gateway_with(&upstream).await;
    let addr = app.addr(ServerKind::Gateway).unwrap();
    // Every case is tried, and all that fail are named at once.
    let mut failed = Vec::new();
    for (case, raw) in misframed_requests() {
        let before = upstream.requests.load(Ordering::SeqCst);
        let text = exchange(addr, &raw).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let refused = head.starts_with("HTTP/1.1 400 ")
            && head.to_ascii_lowercase().contains("\r\nconnection: close")
            // The fallback's own 400 has no body: this one is the lane's.
            && serde_json::from_str::<serde_json::Value>(body)
                .is_ok_and(|body| body["error"] == "bad_request");
        let reached = upstream.requests.load(Ordering::SeqCst) != before;
        if !refused || reached {
            failed.push(format!("{case} (reached the upstream: {reached}): {text}"));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    app.shutdown().await;
}

#[tokio::test]
async fn well_framed_bodies_still_pass_on_the_lane() {
    let upstream = raw_upstream().await;
    let app = gateway_with(&upstream).await;
    let addr = app.addr(ServerKind::Gateway).unwrap();
    let close = "Connection: close\r\n";
    for (case, lines, rest) in [
        (
            "equal lengths",
            "Content-Length: 3\r\nContent-Length: 3\r\n",
            &b"abc"[..],
        ),
        (
            "a chunked body with an extension and a trailer",
            "Transfer-Encoding: chunked\r\n",
            b"1;x=y\r\na\r\n2\r\nbc\r\n0\r\nX-T: 1\r\n\r\n",
        ),
    ] {
        let mut raw =
            format!("POST /api/raw/echo HTTP/1.1\r\nHost: gw\r\n{lines}{close}\r\n").into_bytes();
        raw.extend_from_slice(rest);
        let before = upstream.requests.load(Ordering::SeqCst);
        let text = exchange(addr, &raw).await;
        assert!(text.starts_with("HTTP/1.1 200 "), "{case}: {text}");
        assert!(text.ends_with("\r\n\r\nabc"), "{case}: {text}");
        assert_eq!(
            upstream.requests.load(Ordering::SeqCst),
            before + 1,
            "{case}"
        );
        assert_eq!(*upstream.last_body.lock().unwrap(), b"abc", "{case}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn misframed_answers_are_502_and_their_connection_is_not_reused() {
    let upstream = raw_upstream().await;
    let app = gateway_with(&upstream).await;
    let addr = app.addr(ServerKind::Gateway).unwrap();
    let mut failed = Vec::new();
    for service in ["plus", "spaced", "twice", "gzip-last", "gzip-first"] {
        let get = |path: &str| {
            format!("GET /api/{service}/{path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        };
        let text = exchange(addr, get(service).as_bytes()).await;
        if !text.starts_with("HTTP/1.1 502 ") {
            failed.push(format!("{service}: {text}"));
        }
        // Requests after it would go on a pooled connection, were it pooled.
        for _ in 0..3 {
            let text = exchange(addr, get("echo").as_bytes()).await;
            assert!(text.starts_with("HTTP/1.1 200 "), "{service}: {text}");
        }
        let reused = upstream.after_misframed.swap(0, Ordering::SeqCst);
        if reused > 0 {
            failed.push(format!(
                "{service}: {reused} requests on its connection after it"
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    app.shutdown().await;
}
