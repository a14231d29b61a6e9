//! The gateway's own HTTP/1.1 path end to end: answers framed every way HTTP/1.1 allows
//! (length, chunked, until close), request bodies, upstreams that close pooled
//! connections, pipelined requests, and a connection handed over to the full router
//! mid-stream. The upstream is a raw TCP server written here, so that each framing is
//! exactly what the test says.

mod gateway_support;

use gateway_support::{answering, read_request, start, with_gateway};
use omc_orchestra::gateway::GatewayConfig;
use omc_orchestra::registry::Registration;
use omc_orchestra_server::app::{App, ServerKind};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw upstream: what it answers depends on the path; it counts the connections it
/// accepted.
struct RawUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn raw_upstream() -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let id = counted.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                    served += 1;
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let answer: Vec<u8> = match path.as_str() {
                        "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n".to_vec(),
                        "/until-close" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nread to the end".to_vec(),
                        "/echo" => {
                            let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
                            answer.extend_from_slice(&body);
                            answer
                        }
                        "/hop" => b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-Request-Id: theirs\r\nDate: Tue, 24 Nov 2026 08:00:00 GMT\r\nX-Kept: yes\r\nX-Kept: twice\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                        "/continue" => b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                        _ => {
                            let text = format!("conn {id} request {served}");
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()).into_bytes()
                        }
                    };
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                    // `/until-close` ends its answer by closing; `/drop` closes the
                    // connection right after a keep-alive answer, as an upstream whose
                    // idle timeout is short does.
                    if path == "/until-close" || path == "/drop" {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream { addr, connections }
}

async fn gateway_with(upstream: &RawUpstream) -> (App, String) {
    let app = start(with_gateway(GatewayConfig::default()), None).await;
    app.backends()
        .registry
        .register(Registration::new("raw", "127.0.0.1", upstream.addr.port()))
        .await
        .unwrap();
    let base = app.url(ServerKind::Gateway);
    answering(&format!("{base}/api/raw/ready")).await;
    (app, base)
}

#[tokio::test]
async fn answers_framed_every_way_pass_through() {
    let upstream = raw_upstream().await;
    let (app, base) = gateway_with(&upstream).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let res = http
            .get(format!("{base}/api/raw/chunked"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.unwrap(), "hello world");
        let res = http
            .get(format!("{base}/api/raw/until-close"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/plain");
        assert_eq!(res.text().await.unwrap(), "read to the end");
        let res = http
            .get(format!("{base}/api/raw/continue"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.text().await.unwrap(),
            "ok",
            "interim answers are skipped"
        );
    }
    // The upstream's hop-by-hop headers (those its `Connection` names too) and its request
    // id stay behind; the rest, repeated ones included, comes through as sent. The same
    // holds on the general-purpose path (a CORS request goes there).
    for origin in [None, Some("http://app.example")] {
        let mut request = http
            .get(format!("{base}/api/raw/hop"))
            .header("x-request-id", "caller-1");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let headers = res.headers();
        assert!(headers.get("x-secret").is_none(), "{origin:?}: {headers:?}");
        assert!(
            headers.get("keep-alive").is_none(),
            "{origin:?}: {headers:?}"
        );
        let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{origin:?}: {headers:?}");
        assert_ne!(ids[0], "theirs", "{origin:?}");
        let kept: Vec<_> = headers.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["yes", "twice"], "{origin:?}");
        assert_eq!(headers.get_all("date").iter().count(), 1, "{origin:?}");
        assert_eq!(headers["date"], "Tue, 24 Nov 2026 08:00:00 GMT");
        assert_eq!(res.text().await.unwrap(), "ok");
    }
    let res = http
        .post(format!("{base}/api/raw/echo"))
        .body("a small body")
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "a small body");
    let large = "x".repeat(300 * 1024);
    let res = http
        .post(format!("{base}/api/raw/echo"))
        .body(large.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), large, "a large body is streamed");
    app.shutdown().await;
}

#[tokio::test]
async fn keep_alive_connections_are_reused_and_closed_ones_replaced() {
    let upstream = raw_upstream().await;
    let (app, base) = gateway_with(&upstream).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let before = upstream.connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        let res = http
            .get(format!("{base}/api/raw/plain"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.unwrap();
    }
    let opened = upstream.connections.load(Ordering::SeqCst) - before;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        opened <= workers,
        "20 sequential requests opened {opened} upstream connections"
    );
    // Every answer of `/drop` is followed by a close the gateway only sees later.
    for i in 0..10 {
        let res = http
            .get(format!("{base}/api/raw/drop"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
        res.text().await.unwrap();
    }
    app.shutdown().await;
}

/// Read answers from `stream` until it closes.
async fn read_all(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    stream.read_to_end(&mut text).await.unwrap();
    String::from_utf8_lossy(&text).to_string()
}

#[tokio::test]
async fn pipelined_requests_and_a_handover_keep_their_order() {
    let upstream = raw_upstream().await;
    let (app, _) = gateway_with(&upstream).await;
    let addr = app.addr(ServerKind::Gateway).unwrap();
    let mut client = TcpStream::connect(addr).await.unwrap();
    // Two proxied requests, a HEAD, then one the gateway answers itself, in one write.
    client
        .write_all(
            b"GET /api/raw/first HTTP/1.1\r\nHost: gw\r\n\r\n\
              GET /api/raw/chunked HTTP/1.1\r\nHost: gw\r\n\r\n\
              HEAD /api/raw/third HTTP/1.1\r\nHost: gw\r\n\r\n\
              GET /health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let text = read_all(&mut client).await;
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 4, "{text}");
    assert!(
        answers[0].starts_with("200") && answers[0].contains("conn "),
        "{text}"
    );
    assert!(
        answers[1].starts_with("200")
            && answers[1].contains("hello")
            && answers[1].contains(" world\r\n0\r\n\r\n"),
        "{text}"
    );
    assert!(
        answers[2].starts_with("200") && !answers[2].contains("conn "),
        "a HEAD answer has no body: {text}"
    );
    assert!(
        answers[3].starts_with("200") && answers[3].contains("\"status\""),
        "{text}"
    );

    // A request that does not parse gets a 400 from the fallback, not a dropped socket.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /api/raw/x HTTP/1.1\r\nBad Header\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_http11_request_names_its_host_once() {
    let upstream = raw_upstream().await;
    let (app, _) = gateway_with(&upstream).await;
    let addr = app.addr(ServerKind::Gateway).unwrap();
    let exchange = |head: &'static [u8]| async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(head).await.unwrap();
        read_all(&mut client).await
    };
    for head in [
        &b"GET /api/raw/x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/raw/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    ] {
        let text = exchange(head).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"], "validation_failed", "{text}");
        assert_eq!(body["details"][0]["field"], "host", "{text}");
    }
    // The host in an absolute target, or an HTTP/1.0 request, needs no Host line.
    for head in [
        &b"GET http://gw/api/raw/x HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /api/raw/x HTTP/1.0\r\n\r\n",
    ] {
        let text = exchange(head).await;
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
            "{text}"
        );
    }
    app.shutdown().await;
}
