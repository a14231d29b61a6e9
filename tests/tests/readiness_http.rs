//! Liveness against readiness on every port: with its Redis gone a server still answers
//! `GET /health` (it is alive) and `GET /health/ready` says 503 naming the backend, until
//! Redis is back; and while Redis stalls, calls answer 503 at the server's own deadline
//! instead of waiting as long as Redis does.

use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra_server::app::{App, Config, ServerKind};
use omc_orchestra_server::config::ConnectionLimits;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let res = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (res.status(), res.json().await.unwrap_or(Value::Null))
}

/// Ask every port for readiness until each answers `want` (Redis reconnects take a
/// moment), then return the last answers.
async fn readiness(app: &App, want: StatusCode) -> Vec<(StatusCode, Value)> {
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..50 {
        answers.clear();
        for kind in ServerKind::ALL {
            answers.push(get(&http, format!("{}/health/ready", app.url(kind))).await);
        }
        if answers.iter().all(|(status, _)| *status == want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answers
}

/// Every server on a Redis of the test's own (with an append-only file when `aof`),
/// once every port says it is ready.
async fn ready_on_redis(aof: bool) -> (RedisProcess, App) {
    let redis = RedisProcess::start(aof).expect("redis-server (`scripts/test` installs it)");
    let config = Config {
        redis_url: Some(redis.url()),
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    for (status, body) in readiness(&app, StatusCode::OK).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["backend"], "redis");
    }
    (redis, app)
}

#[tokio::test]
async fn readiness_follows_redis_while_liveness_stays() {
    // With its append-only file, Redis comes back with what it held.
    let (redis, app) = ready_on_redis(true).await;

    redis.kill();
    for (status, body) in readiness(&app, StatusCode::SERVICE_UNAVAILABLE).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "not_ready", "{body}");
        assert_eq!(body["details"][0]["backend"], "redis", "{body}");
    }
    let http = reqwest::Client::new();
    for kind in ServerKind::ALL {
        let (status, _) = get(&http, format!("{}/health", app.url(kind))).await;
        assert_eq!(status, StatusCode::OK, "{} is alive", kind.name());
    }

    redis.restart().unwrap();
    for (status, body) in readiness(&app, StatusCode::OK).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_redis_that_came_back_empty_is_not_ready() {
    let (redis, app) = ready_on_redis(false).await;

    // Without persistence Redis restarts with nothing: every port says so.
    redis.restart().unwrap();
    let http = reqwest::Client::new();
    for kind in ServerKind::ALL {
        // The first asks may find the connection broken; then Redis answers, empty.
        let mut last = Value::Null;
        for _ in 0..50 {
            let (status, body) = get(&http, format!("{}/health/ready", app.url(kind))).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["details"][0]["backend"], "redis", "{body}");
            last = body;
            if last["message"]
                .as_str()
                .unwrap_or_default()
                .contains("came back empty")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let message = last["message"].as_str().unwrap_or_default();
        assert!(message.contains("came back empty"), "{last}");
    }
    for kind in ServerKind::ALL {
        let (status, _) = get(&http, format!("{}/health", app.url(kind))).await;
        assert_eq!(status, StatusCode::OK, "{} is alive", kind.name());
    }
    app.shutdown().await;
}

#[tokio::test]
async fn in_memory_servers_are_always_ready() {
    let app = App::start(Config::ephemeral(), &ServerKind::ALL)
        .await
        .unwrap();
    for (status, body) in readiness(&app, StatusCode::OK).await {
        assert_eq!(
            (status, &body["backend"]),
            (StatusCode::OK, &Value::from("memory"))
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_stalled_redis_gets_answers_at_the_deadline_and_then_service_again() {
    let redis = RedisProcess::start(false).expect("redis-server (`scripts/test` installs it)");
    let config = Config {
        redis_url: Some(redis.url()),
        connections: ConnectionLimits {
            request_timeout: Duration::from_secs(1),
            ..ConnectionLimits::default()
        },
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let http = reqwest::Client::new();
    let jobs = format!("{}/jobs", app.url(ServerKind::Jobs));
    let job = serde_json::json!({"type": "uppf-processing", "data": {"claim": "C-1"}});
    let enqueue = || {
        http.post(&jobs)
            .json(&job)
            .timeout(Duration::from_secs(20))
            .send()
    };
    assert_eq!(enqueue().await.unwrap().status(), StatusCode::CREATED);

    redis.pause();
    let answers = futures::future::join_all((0..20).map(|_| enqueue())).await;
    for answer in answers {
        let answer = answer.expect("every call answers while Redis stalls");
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "timeout", "{body}");
    }
    let (status, _) = get(&http, format!("{}/health", app.url(ServerKind::Jobs))).await;
    assert_eq!(status, StatusCode::OK, "alive while Redis stalls");
    for (status, body) in readiness(&app, StatusCode::SERVICE_UNAVAILABLE).await {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    redis.resume();
    let mut served = false;
    for _ in 0..50 {
        if enqueue().await.unwrap().status() == StatusCode::CREATED {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "the jobs server serves again once Redis goes on");
    app.shutdown().await;
}

/// 200 enqueues sent at once while Redis is paused for `pause`, each numbered from
/// `first`: what each answered.
async fn enqueues_through_a_pause(
    app: &App,
    redis: &RedisProcess,
    first: u64,
    pause: Duration,
) -> Vec<(u64, StatusCode, Value)> {
    let http = reqwest::Client::new();
    let jobs = format!("{}/jobs", app.url(ServerKind::Jobs));
    redis.pause();
    let calls = (first..first + 200).map(|n| {
        let request = http
            .post(&jobs)
            .json(&serde_json::json!({"type": "reconciliation", "data": {"n": n}}))
            .timeout(Duration::from_secs(30));
        async move {
            let answer = request.send().await.expect("every call answers");
            let status = answer.status();
            (n, status, answer.json().await.unwrap_or(Value::Null))
        }
    });
    let calls = tokio::spawn(futures::future::join_all(calls));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = format!("{}/health/ready", app.url(ServerKind::Jobs));
    let (status, body) = get(&http, ready).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "ready while paused: {body}"
    );
    tokio::time::sleep(pause.saturating_sub(Duration::from_secs(1))).await;
    redis.resume();
    calls.await.unwrap()
}

#[tokio::test]
async fn enqueues_through_a_paused_redis_answer_and_are_stored_once() {
    let redis = RedisProcess::start(false).expect("redis-server (`scripts/test` installs it)");
    let config = Config {
        redis_url: Some(redis.url()),
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    let mut answers = Vec::new();
    for (first, seconds) in [(0, 5), (1_000, 15)] {
        let pause = Duration::from_secs(seconds);
        answers.extend(enqueues_through_a_pause(&app, &redis, first, pause).await);
        // The servers go on without a restart.
        for (status, body) in readiness(&app, StatusCode::OK).await {
            assert_eq!(status, StatusCode::OK, "after a {seconds} s pause: {body}");
        }
    }
    let http = reqwest::Client::new();
    let mut copies = std::collections::HashMap::<u64, usize>::new();
    for offset in (0..).step_by(1_000) {
        let page = format!(
            "{}/jobs?state=waiting&limit=1000&offset={offset}",
            app.url(ServerKind::Jobs)
        );
        let (status, body) = get(&http, page).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let jobs = body["jobs"].as_array().cloned().expect("a page of jobs");
        for job in &jobs {
            *copies
                .entry(job["data"]["n"].as_u64().unwrap())
                .or_default() += 1;
        }
        if jobs.len() < 1_000 {
            break;
        }
    }
    let (mut created, mut refused) = (0, 0);
    for (n, status, body) in &answers {
        let stored = copies.get(n).copied().unwrap_or(0);
        match *status {
            StatusCode::CREATED => {
                created += 1;
                assert_eq!(
                    stored, 1,
                    "job {n} answered 201 and is stored {stored} times"
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_eq!(body["error"], "timeout", "{body}");
                assert!(
                    stored <= 1,
                    "job {n} answered 503 and is stored {stored} times"
                );
            }
            other => panic!("job {n}: {other} {body}"),
        }
    }
    let stored: usize = copies.values().sum();
    println!("{created} answered 201, {refused} answered 503 within the deadline, {stored} stored");
    // A 503 outcome was unknown: the batch was sent again with its key once Redis went on.
    assert!(stored >= created, "the listing found {stored} jobs");
    assert!(refused > 0, "a 15 s pause outlasts the 5 s deadline");
    app.shutdown().await;
}
