//! The security suite, against the real `orchestra` binary: where it listens, who may
//! call what, which tokens it refuses and why, which browser origins it answers, and
//! that no secret reaches its output or its answers.

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use omc_orchestra::testkit::redis::free_port;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const SECRET: &str = "a-control-plane-secret-of-at-least-32-bytes";
const END_USER_SECRET: &str = "the-gateway-end-user-secret";

fn orchestra() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orchestra"));
    // The suite sets what it tests; nothing leaks in from the machine's environment.
    for var in [
        "JWT_SECRET",
        "SERVICE_PUBLIC_KEY",
        "BIND",
        "PORT",
        "REDIS_URL",
        "REDIS_HOST",
        "REDIS_PORT",
        "DATABASE_URL",
        "ALLOW_UNAUTHENTICATED",
        "ORCHESTRA_CONFIG",
    ] {
        command.env_remove(var);
    }
    command.env("LOG_LEVEL", "info").env("NO_COLOR", "1");
    command
}

fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../omc-orchestra/tests/fixtures/keys")
        .join(name)
}

/// `orchestra up` (or one server) as a child process, killed when dropped; its output
/// goes to a file the test reads.
struct Running {
    child: Child,
    ports: [u16; 4],
    log: PathBuf,
}

impl Running {
    /// Start `orchestra up` on four free ports with `args` and `env`.
    async fn up(args: &[&str], env: &[(&str, &str)]) -> Self {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let log = std::env::temp_dir().join(format!("orchestra-sec-{}.log", uuid_like()));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let mut command = orchestra();
        command
            .args([
                "--registry-port",
                &ports[0].to_string(),
                "--gateway-port",
                &ports[1].to_string(),
                "--jobs-port",
                &ports[2].to_string(),
                "--logging-port",
                &ports[3].to_string(),
            ])
            .args(args)
            .arg("up")
            .envs(env.iter().copied())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = command.spawn().expect("the orchestra binary starts");
        let running = Self { child, ports, log };
        running.wait_healthy().await;
        running
    }

    async fn wait_healthy(&self) {
        let http = Client::new();
        for _ in 0..300 {
            let all = futures_ready(&http, &self.ports).await;
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("orchestra did not answer /health:\n{}", self.output());
    }

    fn url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[index])
    }

    fn registry(&self) -> String {
        self.url(0)
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn futures_ready(http: &Client, ports: &[u16]) -> bool {
    for port in ports {
        let ok = http
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            return false;
        }
    }
    true
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    )
}

/// `orchestra token …` with the suite's secret; the token it prints.
fn mint(args: &[&str]) -> String {
    let output = orchestra()
        .env("JWT_SECRET", SECRET)
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "orchestra token {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(claims: Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn call(
    http: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn registration(name: &str, port: u16) -> Value {
    json!({"name": name, "version": "1.0.0", "host": "127.0.0.1", "port": port,
           "type": "api", "healthEndpoint": "/health"})
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = orchestra()
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    panic!(
        "orchestra {args:?} did not exit: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The local addresses listening on `port`, from the kernel's own table: no traffic
/// needed to tell loopback from every interface.
fn listening_addresses(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let mut found = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // State 0A is LISTEN; the local address is hex IP:hex port.
        if fields.len() > 3 && fields[3] == "0A" {
            if let Some((ip, p)) = fields[1].split_once(':') {
                if u16::from_str_radix(p, 16) == Ok(port) {
                    found.push(ip.to_owned());
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_default_bind_is_loopback_and_an_open_bind_refuses_to_start() {
    let running = Running::up(&[], &[]).await;
    for port in running.ports {
        // 0100007F is 127.0.0.1 as the kernel prints it (little-endian hex).
        assert_eq!(listening_addresses(port), ["0100007F"], "port {port}");
    }
    drop(running);

    let port = free_port().to_string();
    let refused = run_to_exit(&["--bind", "0.0.0.0", "--port", &port, "registry"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    for named in [
        "JWT_SECRET",
        "--service-public-key",
        "--allow-unauthenticated",
    ] {
        assert!(said.contains(named), "{said}");
    }
    let short = run_to_exit(&["--port", &port, "registry"], &[("JWT_SECRET", "short")]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("32 bytes"));

    // On purpose it serves open, and says so at every start.
    let open = Running::up(&["--bind", "0.0.0.0", "--allow-unauthenticated"], &[]).await;
    assert_eq!(listening_addresses(open.ports[0]), ["00000000"]);
    let log = open.output();
    assert!(
        log.contains("WITHOUT control-plane authentication"),
        "{log}"
    );
}

#[tokio::test]
async fn each_scope_allows_its_calls_and_nothing_else() {
    let running = Running::up(&[], &[("JWT_SECRET", SECRET)]).await;
    let http = Client::new();
    let (registry, gateway, jobs, logging) = (
        running.registry(),
        running.url(1),
        running.url(2),
        running.url(3),
    );
    let pricing = mint(&["--service", "pricing-service", "--scope", "registry:write"]);
    let reader = mint(&["--service", "reports-service", "--scope", "read"]);
    let publisher = mint(&["--service", "pricing-service", "--scope", "events:publish"]);
    let jobs_writer = mint(&["--service", "pricing-service", "--scope", "jobs:write"]);
    let logger = mint(&["--service", "pricing-service", "--scope", "logs:write"]);
    let admin = mint(&["--admin"]);

    // Unauthenticated: liveness and metrics only.
    for url in [&registry, &gateway, &jobs, &logging] {
        for path in ["/health", "/metrics"] {
            let (status, _) = call(&http, Method::GET, &format!("{url}{path}"), None, None).await;
            assert_eq!(status, StatusCode::OK, "{url}{path}");
        }
    }
    let services = format!("{registry}/registry/services");
    let (status, body) = call(&http, Method::GET, &services, None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );

    // registry:write: its own service only.
    let register = format!("{registry}/registry/register");
    let (status, own) = call(
        &http,
        Method::POST,
        &register,
        Some(&pricing),
        Some(registration("pricing-service", 3006)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let (status, body) = call(
        &http,
        Method::POST,
        &register,
        Some(&pricing),
        Some(registration("auth-service", 3001)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["details"][0]["field"], "name", "{body}");
    let (status, other) = call(
        &http,
        Method::POST,
        &register,
        Some(&admin),
        Some(registration("auth-service", 3001)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other_id = other["id"].as_str().unwrap();
    let own_id = own["id"].as_str().unwrap();
    for (method, url) in [
        (
            Method::PUT,
            format!("{registry}/registry/heartbeat/{other_id}"),
        ),
        (
            Method::DELETE,
            format!("{registry}/registry/services/{other_id}"),
        ),
    ] {
        let (status, body) = call(&http, method, &url, Some(&pricing), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{url}: {body}");
        assert_eq!(body["details"][0]["field"], "serviceId", "{body}");
    }
    // Nor may it take the other's instance over by naming its id.
    let mut hijack = registration("pricing-service", 3001);
    hijack["id"] = json!(other_id);
    let (status, body) = call(&http, Method::POST, &register, Some(&pricing), Some(hijack)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["details"][0]["field"], "id", "{body}");
    let heartbeat = format!("{registry}/registry/heartbeat/{own_id}");
    let (status, _) = call(&http, Method::PUT, &heartbeat, Some(&pricing), None).await;
    assert_eq!(status, StatusCode::OK);
    // A write scope does not read.
    let (status, body) = call(&http, Method::GET, &services, Some(&pricing), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["details"][0]["scope"], "read", "{body}");

    // read: reads everything, writes nothing.
    let discovery = format!("{registry}/registry/discovery/pricing-service");
    for url in [
        &services,
        &discovery,
        &format!("{jobs}/jobs/stats"),
        &format!("{logging}/logs"),
    ] {
        let (status, body) = call(&http, Method::GET, url, Some(&reader), None).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
    }
    let (status, body) = call(
        &http,
        Method::POST,
        &register,
        Some(&reader),
        Some(registration("reports-service", 3009)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["details"][0]["scope"], "registry:write", "{body}");

    // events:publish, jobs:write, logs:write: each its own write.
    let event = json!({"type": "PRICE_UPDATED", "source": "pricing-service",
                       "data": {"product": "PMS", "price": 14.2}});
    let events = format!("{registry}/events");
    let (status, body) = call(
        &http,
        Method::POST,
        &events,
        Some(&publisher),
        Some(event.clone()),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = call(&http, Method::POST, &events, Some(&reader), Some(event)).await;
    assert_eq!(
        (status, &body["details"][0]["scope"]),
        (StatusCode::FORBIDDEN, &json!("events:publish"))
    );

    let job = json!({"type": "price-calculation", "data": {"station": "ACC-01"}});
    let enqueue = format!("{jobs}/jobs");
    let (status, body) = call(
        &http,
        Method::POST,
        &enqueue,
        Some(&jobs_writer),
        Some(job.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = call(&http, Method::POST, &enqueue, Some(&publisher), Some(job)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let retry = format!("{jobs}/jobs/retry-failed");
    let (status, body) = call(&http, Method::POST, &retry, Some(&jobs_writer), None).await;
    assert_eq!(
        (status, &body["details"][0]["scope"]),
        (StatusCode::FORBIDDEN, &json!("admin"))
    );
    let (status, body) = call(&http, Method::POST, &retry, Some(&admin), None).await;
    assert!(status.is_success(), "{status} {body}");

    let record = json!({"level": "info", "service": "pricing-service", "message": "priced"});
    let logs = format!("{logging}/logs");
    let (status, body) = call(
        &http,
        Method::POST,
        &logs,
        Some(&logger),
        Some(record.clone()),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");
    let (status, _) = call(&http, Method::POST, &logs, Some(&jobs_writer), Some(record)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // admin: the gateway's own endpoints, which no other scope opens.
    let breakers = format!("{gateway}/gateway/breakers");
    let (status, _) = call(&http, Method::GET, &breakers, Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(&http, Method::GET, &breakers, Some(&admin), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&http, Method::GET, &breakers, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test]
async fn the_jwt_negative_corpus_is_refused_with_its_reason() {
    let config = std::env::temp_dir().join(format!("orchestra-sec-{}.toml", uuid_like()));
    std::fs::write(
        &config,
        format!(
            "[gateway.auth]\njwt_secret = \"{END_USER_SECRET}\"\naudience = \"erp-users\"\n\
             [[gateway.routes]]\nprefix = \"/accounts\"\nservice = \"accounts-service\"\n\
             auth = true\n"
        ),
    )
    .unwrap();
    let running = Running::up(
        &["--config", config.to_str().unwrap()],
        &[("JWT_SECRET", SECRET)],
    )
    .await;
    let _ = std::fs::remove_file(&config);
    let http = Client::new();
    let services = format!("{}/registry/services", running.registry());
    let good = json!({"aud": "orchestra", "sub": "ops", "scope": "admin", "exp": now() + 600});
    let without = |claim: &str| {
        let mut claims = good.clone();
        claims.as_object_mut().unwrap().remove(claim);
        claims
    };
    let with = |claim: &str, value: Value| {
        let mut claims = good.clone();
        claims[claim] = value;
        claims
    };
    let rsa_public = std::fs::read(key("rsa.pub.pem")).unwrap();
    let end_user = json!({"aud": "erp-users", "sub": "u-42", "exp": now() + 600});
    let corpus: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
            "alg: none",
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}.x",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
            "alg: none",
        ),
        (
            "HS256 keyed with the RSA public key",
            signed(good.clone(), &rsa_public),
            "signature",
        ),
        ("no exp", signed(without("exp"), SECRET.as_bytes()), "`exp`"),
        ("no aud", signed(without("aud"), SECRET.as_bytes()), "`aud`"),
        (
            "expired",
            signed(with("exp", json!(now() - 3600)), SECRET.as_bytes()),
            "expired",
        ),
        (
            "nbf ahead",
            signed(with("nbf", json!(now() + 3600)), SECRET.as_bytes()),
            "nbf",
        ),
        (
            "wrong aud",
            signed(with("aud", json!("erp-users")), SECRET.as_bytes()),
            "audience",
        ),
        (
            "wrong secret",
            signed(good.clone(), b"another-secret-of-at-least-32-bytes!"),
            "signature",
        ),
        ("two segments", "e30.e30".to_owned(), "malformed"),
        ("not base64", "%%%.e30.e30".to_owned(), "malformed"),
        (
            "end-user token",
            signed(end_user.clone(), END_USER_SECRET.as_bytes()),
            "signature",
        ),
    ];
    for (case, token, reason) in corpus {
        let (status, body) = call(&http, Method::GET, &services, Some(&token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{case}: `{message}` lacks `{reason}`"
        );
    }
    let (status, _) = call(
        &http,
        Method::GET,
        &services,
        Some(&signed(good.clone(), SECRET.as_bytes())),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the corpus's own good token");

    // And the reverse: on a gateway route an end-user token passes auth (no instance
    // answers, so 503), a control-plane admin token does not.
    let route = format!("{}/accounts/me", running.url(1));
    let user = signed(end_user, END_USER_SECRET.as_bytes());
    let (status, body) = call(&http, Method::GET, &route, Some(&user), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, body) = call(&http, Method::GET, &route, Some(&mint(&["--admin"])), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A server verifying with a public key takes that key's algorithm only.
    let keyed = Running::up(
        &[
            "--service-public-key",
            key("ed25519.pub.pem").to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let services = format!("{}/registry/services", keyed.registry());
    let output = orchestra()
        .args([
            "token",
            "--admin",
            "--private-key",
            key("ed25519.pem").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let ed_token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, _) = call(&http, Method::GET, &services, Some(&ed_token), None).await;
    assert_eq!(status, StatusCode::OK);
    let public = std::fs::read(key("ed25519.pub.pem")).unwrap();
    let (status, body) = call(
        &http,
        Method::GET,
        &services,
        Some(&signed(good, &public)),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("`HS256`"),
        "{body}"
    );
}

#[tokio::test]
async fn browsers_from_foreign_origins_get_no_cors_and_no_socket() {
    let running = Running::up(
        &["--cors-origin", "https://erp.example.com"],
        &[("JWT_SECRET", SECRET)],
    )
    .await;
    let http = Client::new();
    let preflight = |origin: &str, url: String| {
        http.request(Method::OPTIONS, url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    for url in [
        format!("{}/registry/register", running.registry()),
        format!("{}/jobs", running.url(2)),
        format!("{}/api/pricing-service/prices", running.url(1)),
    ] {
        let foreign = preflight("http://evil.example", url.clone()).await.unwrap();
        assert!(
            foreign
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{url}: {:?}",
            foreign.headers()
        );
        let listed = preflight("https://erp.example.com", url.clone())
            .await
            .unwrap();
        assert_eq!(
            listed.headers()["access-control-allow-origin"],
            "https://erp.example.com",
            "{url}"
        );
        // Spelled out: a `*` would not cover `Authorization`.
        let allowed = listed.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{url}: {allowed}");
    }
    // The dashboard on the registry's port may call its siblings; no other port may.
    let jobs = format!("{}/jobs/stats", running.url(2));
    let dashboard = format!("http://127.0.0.1:{}", running.ports[0]);
    let sibling = preflight(&dashboard, jobs.clone()).await.unwrap();
    assert_eq!(
        sibling.headers()["access-control-allow-origin"],
        dashboard.as_str()
    );
    let stranger = preflight("http://127.0.0.1:1", jobs).await.unwrap();
    assert!(stranger
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // The live feed: a foreign page is refused even with a good token; no token is 401.
    let admin = mint(&["--admin"]);
    let ws = format!("ws://127.0.0.1:{}/ws", running.ports[0]);
    let upgrade = |origin: Option<&str>, url: String| {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    let status_of = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected WebSocket failure: {other}"),
    };
    let with_token = format!("{ws}?token={admin}");
    assert_eq!(
        status_of(
            upgrade(Some("http://evil.example"), with_token.clone())
                .await
                .map(|_| ())
        ),
        403
    );
    assert_eq!(status_of(upgrade(None, ws.clone()).await.map(|_| ())), 401);
    assert_eq!(
        status_of(
            upgrade(Some(&dashboard), with_token.clone())
                .await
                .map(|_| ())
        ),
        101
    );
    assert_eq!(status_of(upgrade(None, with_token).await.map(|_| ())), 101);
}

/// A `redis-server` that wants a password, on a free port, killed when dropped.
struct PasswordRedis(Child);

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn passwords_never_reach_the_output_or_the_answers() {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--requirepass", "hunter2-redis-pw"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (`scripts/test` installs it)");
    let _redis = PasswordRedis(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let redis_url = format!("redis://:hunter2-redis-pw@127.0.0.1:{port}");
    let running = Running::up(
        &["--redis", &redis_url],
        &[
            ("JWT_SECRET", SECRET),
            (
                "DATABASE_URL",
                "postgres://postgres:pg-secret-pw@127.0.0.1:5432/postgres",
            ),
        ],
    )
    .await;
    let http = Client::new();
    let admin = mint(&["--admin"]);
    let mut body = registration("pricing-service", 3006);
    body["dependencies"] = json!(["redis", "postgres"]);
    let register = format!("{}/registry/register", running.registry());
    let (status, _) = call(&http, Method::POST, &register, Some(&admin), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    // The checker probes the dependencies an instance names, each with its address.
    let mut answer = String::new();
    for _ in 0..100 {
        let (status, body) = call(
            &http,
            Method::GET,
            &format!("{}/health/dependencies", running.registry()),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        answer = body.to_string();
        if answer.contains("127.0.0.1:5432") && answer.contains(&format!("127.0.0.1:{port}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answer.contains("127.0.0.1:5432"), "{answer}");
    // A bad call's error body, too.
    let (_, error) = call(
        &http,
        Method::POST,
        &format!("{}/registry/register", running.registry()),
        Some(&admin),
        Some(json!({"name": "x"})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let output = running.output();
    assert!(
        output.contains("orchestra"),
        "the banner was printed: {output}"
    );
    for secret in ["hunter2-redis-pw", "pg-secret-pw", SECRET] {
        assert!(
            !output.contains(secret),
            "`{secret}` in the output:\n{output}"
        );
        assert!(
            !answer.contains(secret),
            "`{secret}` in /health/dependencies: {answer}"
        );
        assert!(
            !error.to_string().contains(secret),
            "`{secret}` in an error: {error}"
        );
    }
}

/// Arguments, environment, and what the refusal must name.
type Refusal<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn orchestra_token_refuses_what_it_cannot_mint() {
    let cases: [Refusal<'_>; 4] = [
        (&["token", "--admin"], &[], "JWT_SECRET"),
        (
            &["token", "--service", "x"],
            &[("JWT_SECRET", SECRET)],
            "--scope",
        ),
        (
            &["token", "--service", "x", "--scope", "read registry:wirte"],
            &[("JWT_SECRET", SECRET)],
            "registry:wirte",
        ),
        (
            &["token", "--scope", "read"],
            &[("JWT_SECRET", SECRET)],
            "--service",
        ),
    ];
    for (args, env, named) in cases {
        let output = run_to_exit(args, env);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?} printed a token");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains(named), "{args:?}: {said}");
    }
}
