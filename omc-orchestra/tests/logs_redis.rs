//! The log store contract against a real Redis, plus what only a shared store can show.

use omc_orchestra::logs::{LogLevel, LogQuery, LogRecord, LogSink, RedisLogSink};
use omc_orchestra::testkit::logs::{run_all, MakeLogSink};
use omc_orchestra::testkit::redis::{store, url};
use omc_orchestra::{clock, RedisStore};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[tokio::test]
async fn redis_log_sink_keeps_the_contract() {
    let stores: Arc<Mutex<Vec<RedisStore>>> = Arc::default();
    let seen = stores.clone();
    let make: MakeLogSink = Arc::new(move |clock| {
        let seen = seen.clone();
        Box::pin(async move {
            let store = store().await;
            seen.lock().unwrap().push(store.clone());
            Arc::new(RedisLogSink::new(store, Arc::new(clock)).await.unwrap()) as Arc<dyn LogSink>
        })
    });
    run_all(make).await;
    let stores = std::mem::take(&mut *stores.lock().unwrap());
    for store in stores {
        store.delete_prefix().await.unwrap();
    }
}

#[tokio::test]
async fn two_sinks_on_one_redis_share_records_and_tails() {
    let first = store().await;
    let second = RedisStore::connect(&url().await, first.prefix())
        .await
        .unwrap();
    let a = RedisLogSink::new(first.clone(), clock::system())
        .await
        .unwrap();
    let b = RedisLogSink::new(second, clock::system()).await.unwrap();
    let mut tail = b.tail(LogQuery::for_service("pricing-service"));
    let record = LogRecord::new(
        chrono::Utc::now(),
        LogLevel::Error,
        "pricing-service",
        "via a",
    );
    a.write(vec![record.clone()]).await.unwrap();
    assert_eq!(
        b.search(&LogQuery::default()).await.unwrap(),
        vec![record.clone()]
    );
    let got = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap();
    assert_eq!(got, Some(record));
    first.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn old_timestamps_and_retention_keep_write_order() {
    let store = store().await;
    let sink = RedisLogSink::with_limits(
        store.clone(),
        clock::system(),
        1000,
        Some(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    // Out of timestamp order: write order wins, and nothing within the hour is trimmed.
    let newer = LogRecord::new(now, LogLevel::Info, "pricing-service", "newer");
    let older = LogRecord::new(
        now - chrono::Duration::minutes(30),
        LogLevel::Info,
        "pricing-service",
        "older",
    );
    sink.write(vec![newer.clone()]).await.unwrap();
    sink.write(vec![older.clone()]).await.unwrap();
    assert_eq!(
        sink.search(&LogQuery::default()).await.unwrap(),
        vec![older.clone(), newer.clone()]
    );
    let since = LogQuery {
        since: Some(now - chrono::Duration::minutes(31)),
        ..Default::default()
    };
    assert_eq!(sink.search(&since).await.unwrap(), vec![older, newer]);
    store.delete_prefix().await.unwrap();
}

#[tokio::test]
async fn a_retention_longer_than_the_calendar_keeps_everything() {
    let store = store().await;
    let sink =
        RedisLogSink::with_limits(store.clone(), clock::system(), 1_000, Some(Duration::MAX))
            .await
            .unwrap();
    let record = LogRecord::new(chrono::Utc::now(), LogLevel::Info, "uppf-service", "kept");
    sink.write(vec![record.clone()]).await.unwrap();
    assert_eq!(
        sink.search(&LogQuery::default()).await.unwrap(),
        vec![record]
    );
    store.delete_prefix().await.unwrap();
}

/// Records written before the search indexes existed are still found by a search that
/// names a service or a level, after newer ones found through the indexes, in order.
#[tokio::test]
async fn records_written_before_the_indexes_are_still_found() {
    let store = store().await;
    let sink = RedisLogSink::new(store.clone(), clock::system())
        .await
        .unwrap();
    let at = |s: i64| chrono::Utc::now() - chrono::Duration::seconds(60 - s);
    let record = |s: i64, level: LogLevel, service: &str| {
        LogRecord::new(at(s), level, service, format!("at {s}"))
    };
    sink.write(vec![
        record(1, LogLevel::Error, "pricing-service"),
        record(2, LogLevel::Info, "pricing-service"),
        record(3, LogLevel::Error, "inventory-service"),
    ])
    .await
    .unwrap();
    // What an earlier version left: the stream alone.
    let mut conn = store.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:log:*by:*", store.prefix()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 4, "the index streams exist: {keys:?}");
    let indexed_from = store.key("log", "logs", "indexed-from");
    for key in keys.iter().chain([&indexed_from]) {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    sink.write(vec![
        record(4, LogLevel::Error, "pricing-service"),
        record(5, LogLevel::Warn, "inventory-service"),
    ])
    .await
    .unwrap();
    let messages = |query: LogQuery| {
        let sink = &sink;
        async move {
            let found = sink.search(&query).await.unwrap();
            found.into_iter().map(|r| r.message).collect::<Vec<_>>()
        }
    };
    let pricing = LogQuery {
        service: Some("pricing-service".into()),
        ..LogQuery::default()
    };
    assert_eq!(messages(pricing).await, ["at 4", "at 2", "at 1"]);
    let errors = LogQuery {
        level: Some(LogLevel::Error),
        ..LogQuery::default()
    };
    assert_eq!(messages(errors).await, ["at 4", "at 3", "at 1"]);
    let warnings = LogQuery {
        level: Some(LogLevel::Warn),
        limit: Some(2),
        ..LogQuery::default()
    };
    let page = sink.search_page(&warnings).await.unwrap();
    let first: Vec<String> = page.records.iter().map(|r| r.message.clone()).collect();
    assert_eq!(first, ["at 5", "at 4"]);
    let rest = LogQuery {
        cursor: page.next_cursor,
        ..warnings
    };
    assert_eq!(messages(rest).await, ["at 3", "at 1"]);
    store.delete_prefix().await.unwrap();
}

/// A store capped at 100 records that held 50 of a service which then went quiet (two
/// minutes old), followed by 2,000 of a busy one, so that the cap dropped the quiet ones.
async fn quiet_then_busy(store: &RedisStore) -> RedisLogSink {
    let sink = RedisLogSink::with_limits(store.clone(), clock::system(), 100, None)
        .await
        .unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(120);
    let quiet = (0..50)
        .map(|i| LogRecord::new(before, LogLevel::Info, "quiet-service", format!("q{i}")))
        .collect();
    sink.write(quiet).await.unwrap();
    for round in 0..20 {
        let busy = (0..100)
            .map(|i| {
                let message = format!("b{round}-{i}");
                LogRecord::new(chrono::Utc::now(), LogLevel::Info, "busy-service", message)
            })
            .collect();
        sink.write(busy).await.unwrap();
    }
    sink
}

/// The integer answer of `command` (`XLEN`, `EXISTS`) for `key`.
async fn count(store: &RedisStore, command: &str, key: &str) -> usize {
    redis::cmd(command)
        .arg(key)
        .query_async(&mut store.connection())
        .await
        .unwrap()
}

/// A write trims only the index streams it adds to, so a service that went quiet keeps
/// index entries whose records the stream's cap has dropped; a search for it trims them
/// rather than walking them one by one, and finds nothing.
#[tokio::test]
async fn a_quiet_services_index_is_trimmed_by_a_search() {
    let store = store().await;
    let sink = quiet_then_busy(&store).await;
    let index = format!("{}svc:quiet-service", store.key("log", "logs", "by:"));
    let stream = store.key("log", "logs", "stream");
    assert!(
        count(&store, "XLEN", &stream).await < 1_000,
        "the stream is capped"
    );
    assert_eq!(
        count(&store, "XLEN", &index).await,
        50,
        "no write touched the index"
    );
    let oldest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut store.connection())
        .await
        .unwrap();
    assert!(
        oldest[0].1[0].1.contains("busy-service"),
        "the quiet records are gone from the stream"
    );
    let query = LogQuery {
        service: Some("quiet-service".into()),
        ..LogQuery::default()
    };
    assert!(sink.search(&query).await.unwrap().is_empty());
    assert_eq!(
        count(&store, "XLEN", &index).await,
        0,
        "the search trimmed the index"
    );
    store.delete_prefix().await.unwrap();
}

/// The store's periodic index trim reaches the indexes no write touches any more: a quiet
/// service's index is emptied and dropped, a busy one's kept, and a new record of the
/// quiet service brings its index back.
#[tokio::test]
async fn trimming_the_indexes_drops_those_of_quiet_services() {
    let store = store().await;
    let sink = quiet_then_busy(&store).await;
    let by = store.key("log", "logs", "by:");
    let quiet_index = format!("{by}svc:quiet-service");
    assert_eq!(
        count(&store, "EXISTS", &quiet_index).await,
        1,
        "no write trimmed it"
    );
    let removed = sink.trim_indexes().await.unwrap();
    assert!(removed >= 50, "the quiet entries went: {removed}");
    assert_eq!(
        count(&store, "EXISTS", &quiet_index).await,
        0,
        "the emptied index is dropped"
    );
    let busy_index = format!("{by}svc:busy-service");
    assert_eq!(
        count(&store, "EXISTS", &busy_index).await,
        1,
        "the busy index stays"
    );
    let names: Vec<String> = redis::cmd("SMEMBERS")
        .arg(store.key("log", "logs", "indexes"))
        .query_async(&mut store.connection())
        .await
        .unwrap();
    assert!(
        !names.contains(&"svc:quiet-service".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"svc:busy-service".to_owned()), "{names:?}");
    let now = chrono::Utc::now();
    let back = LogRecord::new(now, LogLevel::Info, "quiet-service", "back");
    sink.write(vec![back]).await.unwrap();
    let query = LogQuery {
        service: Some("quiet-service".into()),
        ..LogQuery::default()
    };
    let found = sink.search(&query).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].message, "back");
    store.delete_prefix().await.unwrap();
}
