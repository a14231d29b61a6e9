//! `rediss://`: a store speaks TLS to a `redis-server` that only listens for TLS, and
//! checks its certificate against the CA the system trusts (here a test CA, named by
//! `SSL_CERT_FILE` as OpenSSL reads it). One test in this binary, because it sets that
//! variable for the process.

use omc_orchestra::jobs::{JobQueue, NewJob, QueueOptions, RedisJobQueue};
use omc_orchestra::testkit::redis::{free_port, RedisProcess};
use omc_orchestra::{clock, RedisStore};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (`scripts/test` installs it)");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, and a certificate it signed for 127.0.0.1, in `dir`.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=orchestra test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "redis.key",
            "-out",
            "redis.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "redis.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "redis.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ],
    );
}

async fn a_job_goes_through(url: &str) -> omc_orchestra::Result<()> {
    let store = RedisStore::connect(url, "tls").await?;
    let queue = RedisJobQueue::new(
        store.clone(),
        "default",
        clock::system(),
        QueueOptions::default(),
    )?;
    let job = queue
        .enqueue(NewJob::new("backup", serde_json::json!({})))
        .await?;
    assert_eq!(queue.get(&job.id).await?.id, job.id);
    store.delete_prefix().await?;
    Ok(())
}

#[tokio::test]
async fn rediss_speaks_tls_and_checks_the_certificate() {
    let dir = std::env::temp_dir().join(format!("orchestra-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let file = |name: &str| dir.join(name).display().to_string();
    let port = free_port();
    // The last `--port` wins: no plain-text port, TLS on `port`.
    let redis = RedisProcess::start_on(
        port,
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("redis.crt"),
            "--tls-key-file".into(),
            file("redis.key"),
            "--tls-ca-cert-file".into(),
            file("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
    )
    .expect("redis-server with TLS");
    // Before the CA is trusted the certificate is refused.
    let untrusted = a_job_goes_through(&format!("rediss://127.0.0.1:{port}")).await;
    assert!(
        untrusted.is_err(),
        "a certificate of an unknown CA was accepted"
    );
    std::env::set_var("SSL_CERT_FILE", file("ca.crt"));
    a_job_goes_through(&format!("rediss://127.0.0.1:{port}"))
        .await
        .unwrap();
    let plain = a_job_goes_through(&format!("redis://127.0.0.1:{port}")).await;
    assert!(plain.is_err(), "plain text reached a TLS-only Redis");
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
