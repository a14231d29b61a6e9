//! Shared by the gateway end-to-end tests: upstream servers on loopback that echo what
//! reached them, and small HTTP helpers. Each test binary uses a part of it.

#![allow(dead_code)]

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use omc_orchestra::gateway::{GatewayConfig, Limits};
use omc_orchestra::registry::{Registration, RegistryOptions};
use omc_orchestra::testkit::eventually;
use omc_orchestra::{Backends, ManualClock};
use omc_orchestra_server::app::{App, Config, ServerKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An upstream that answers with what it received and counts its hits.
#[derive(Clone)]
pub(crate) struct Upstream {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) hits: Arc<AtomicUsize>,
    pub(crate) failing: Arc<AtomicBool>,
}

pub(crate) async fn echo(State(up): State<Upstream>, req: Request) -> Response {
    up.hits.fetch_add(1, Ordering::SeqCst);
    if req.uri().path().ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if up.failing.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().map(str::to_owned);
    let method = parts.method.as_str().to_owned();
    // Read the whole body before answering, as a real service does: an answer sent while
    // the gateway still streams the request would race the connection's close.
    let received = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_or(0, |b| b.len());
    let body = json!({
        "upstream": up.name,
        "method": method,
        "path": path,
        "query": query,
        "received": received,
        "requestId": header("x-request-id"),
        "traceparent": header("traceparent"),
        "forwardedFor": header("x-forwarded-for"),
        "forwardedProto": header("x-forwarded-proto"),
        "underscored": header("x_user_id"),
        "userId": header("x-user-id"),
        "roles": header("x-user-roles"),
    });
    let mut res = Json(body).into_response();
    let cache = if path.ends_with("/cached") {
        Some("public, max-age=60")
    } else if path.ends_with("/nostore") {
        Some("no-store")
    } else {
        None
    };
    if let Some(value) = cache {
        res.headers_mut()
            .insert("cache-control", value.parse().unwrap());
    }
    res
}

pub(crate) async fn ws_echo(ws: axum::extract::ws::WebSocketUpgrade) -> Response {
    ws.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let axum::extract::ws::Message::Text(text) = message {
                let reply = format!("echo: {}", text.as_str());
                if socket.send(reply.into()).await.is_err() {
                    break;
                }
            }
        }
    })
}

pub(crate) async fn upstream(name: &'static str) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = Upstream {
        name,
        addr: listener.local_addr().unwrap(),
        hits: Arc::default(),
        failing: Arc::default(),
    };
    let router = Router::new()
        .route("/ws", axum::routing::get(ws_echo))
        .fallback(echo)
        .with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    up
}

pub(crate) async fn register(app: &App, service: &str, up: &Upstream, weight: i64) -> String {
    let mut registration = Registration::new(service, "127.0.0.1", up.addr.port());
    registration.weight = Some(weight);
    app.backends()
        .registry
        .register(registration)
        .await
        .unwrap()
        .id
}

pub(crate) async fn start(config: Config, clock: Option<&ManualClock>) -> App {
    match clock {
        Some(clock) => {
            let backends =
                Backends::memory_with(Arc::new(clock.clone()), RegistryOptions::default());
            App::start_with(config, &ServerKind::ALL, backends)
                .await
                .unwrap()
        }
        None => App::start(config, &ServerKind::ALL).await.unwrap(),
    }
}

pub(crate) fn with_gateway(gateway: GatewayConfig) -> Config {
    Config {
        gateway,
        ..Config::ephemeral()
    }
}

pub(crate) async fn get(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let res = http.get(url).send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Wait until a GET of `url` is answered 200 (the gateway routes it to a live upstream).
pub(crate) async fn answering(url: &str) {
    let http = reqwest::Client::new();
    eventually(
        &format!("{url} to answer"),
        Duration::from_secs(10),
        || async {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
}

/// Wait until the gateway's view routes `url` to `upstream`.
pub(crate) async fn routed(http: &reqwest::Client, url: &str, upstream: &str) {
    eventually(
        &format!("{url} to reach {upstream}"),
        Duration::from_secs(5),
        || async {
            let (status, body) = get(http, url).await;
            (status == StatusCode::OK && body["upstream"] == upstream).then_some(())
        },
    )
    .await;
}

pub(crate) async fn breaker_phase(http: &reqwest::Client, base: &str, id: &str) -> String {
    let (_, list) = get(http, &format!("{base}/gateway/breakers")).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["instance"] == id)
        .map_or("closed".into(), |b| b["phase"].as_str().unwrap().to_owned())
}

pub(crate) fn limited(second: u64) -> GatewayConfig {
    let mut gateway = GatewayConfig::default();
    gateway.discovery.limits = Limits {
        second: Some(second),
        ..Limits::default()
    };
    gateway
}

pub(crate) async fn burst(http: &reqwest::Client, urls: Vec<String>) -> Vec<reqwest::Response> {
    futures::future::join_all(urls.into_iter().map(|url| http.get(url).send()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

pub(crate) fn token(claims: Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// GET `target` exactly as written (an HTTP client would resolve its dot-segments first)
/// from the server at `base`, over a connection of its own: the status and the body.
pub(crate) async fn raw_get(base: &str, target: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap();
    (
        StatusCode::from_u16(code).unwrap(),
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

/// Read one request (head and `Content-Length` body) from `stream`; `None` at its end.
pub(crate) async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                read_more(stream, buf).await?;
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            return Some((head, body));
        }
        read_more(stream, buf).await?;
    }
}

/// Append what `stream` has next to `buf`; `None` at its end or on an error.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = tokio::io::AsyncReadExt::read(stream, &mut chunk)
        .await
        .ok()?;
    buf.extend_from_slice(&chunk[..n]);
    (n > 0).then_some(())
}
