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

#[tokio::test]
async fn readiness_follows_redis_while_liveness_stays() {
    // With its append-only file, Redis comes back with what it held.
    let redis = RedisProcess::start(true).expect("redis-server (apt-get install redis-server)");
    let config = Config {
        redis_url: Some(redis.url()),
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    for (status, body) in readiness(&app, StatusCode::OK).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["backend"], "redis");
    }

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
    let redis = RedisProcess::start(false).expect("redis-server (apt-get install redis-server)");
    let config = Config {
        redis_url: Some(redis.url()),
        ..Config::ephemeral()
    };
    let app = App::start(config, &ServerKind::ALL).await.unwrap();
    for (status, body) in readiness(&app, StatusCode::OK).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }

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
    let redis = RedisProcess::start(false).expect("redis-server (apt-get install redis-server)");
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
