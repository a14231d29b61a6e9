//! Each durability level against Redis servers of the test's own: a level the server's
//! settings cannot keep stops the stores from starting and names the setting, and
//! `replica` acknowledges a write only once a replica has it.

use omc_orchestra::durability::Durability;
use omc_orchestra::events::NewEvent;
use omc_orchestra::jobs::NewJob;
use omc_orchestra::registry::RegistryOptions;
use omc_orchestra::testkit::redis::RedisProcess;
use omc_orchestra::Backends;
use std::time::Duration;

async fn stores(redis: &RedisProcess, level: Durability) -> omc_orchestra::Result<Backends> {
    Backends::redis_durable(&redis.url(), "orc", RegistryOptions::default(), level).await
}

fn redis(started: std::io::Result<RedisProcess>) -> RedisProcess {
    started.expect("redis-server must be installed for this test")
}

#[tokio::test]
async fn aof_is_refused_where_redis_cannot_keep_it() {
    let no_file = redis(RedisProcess::start(false));
    let err = stores(&no_file, Durability::Aof).await.unwrap_err();
    assert!(err.to_string().contains("appendonly no"), "{err}");

    let everysec = redis(RedisProcess::start_fsync("everysec"));
    let memory = stores(&everysec, Durability::Memory).await.unwrap();
    let waitaof = memory.durability.redis.unwrap().has_waitaof();
    let chosen = stores(&everysec, Durability::Aof).await;
    if !waitaof {
        let err = chosen.unwrap_err().to_string();
        assert!(err.contains("appendfsync everysec"), "{err}");
    } else {
        // From 7.2 each write waits for the file with WAITAOF instead.
        assert!(chosen.unwrap().durability.met);
    }

    let always = redis(RedisProcess::start(true));
    let kept = stores(&always, Durability::Aof).await.unwrap();
    assert!(kept.durability.met, "{:?}", kept.durability);
    let job = NewJob::new("uppf-processing", serde_json::json!({}));
    kept.jobs.enqueue(job).await.unwrap();
}

#[tokio::test]
async fn replica_acknowledges_only_what_a_replica_has() {
    let primary = redis(RedisProcess::start(false));
    let lone = stores(&primary, Durability::Replica).await.unwrap();
    assert!(
        !lone.durability.met,
        "no replica yet: {:?}",
        lone.durability
    );
    assert!(lone.durability.risk.contains("no replica"));
    let job = NewJob::new("reconciliation", serde_json::json!({ "n": 1 }));
    let err = lone.jobs.enqueue(job).await.unwrap_err().to_string();
    assert!(err.contains("a replica did not confirm"), "{err}");
    let event = NewEvent::new("RECONCILIATION_POSTED", "finance", serde_json::json!({}));
    let err = lone.events.publish(event).await.unwrap_err().to_string();
    assert!(err.contains("a replica did not confirm"), "{err}");

    let replica = redis(RedisProcess::start_replica_of(&primary));
    let client = redis::Client::open(replica.url()).unwrap();
    let mut on_replica = client.get_multiplexed_async_connection().await.unwrap();
    // A replica answers once it has synced with the primary.
    let mut synced = false;
    for _ in 0..100 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut on_replica)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            synced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(synced, "the replica never synced");
    let stores = stores(&primary, Durability::Replica).await.unwrap();
    assert!(stores.durability.met, "{:?}", stores.durability);
    let job = NewJob::new("reconciliation", serde_json::json!({ "n": 2 }));
    let job = stores.jobs.enqueue(job).await.unwrap();
    let key = format!("orc:job:{{default}}:j:{}", job.id);
    let held: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert!(held, "acknowledged, yet the replica has no {key}");
}
