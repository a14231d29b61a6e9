//! The command line's parsing: options, their layers, and what each command's help shows.

use super::*;
use crate::app::{Config, ServerKind};
use omc_orchestra::durability::Durability;
use std::time::Duration;

#[test]
fn health_settings_and_alert_rules_come_from_the_toml_file() {
    let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"
health_interval = 10
system_sample_every = 15

[health_dependencies]
postgres = "postgres://postgres@127.0.0.1:5432/postgres"

[[alert_rules]]
name = "HighCpu"
metric = "cpu_usage_percent"
comparison = "above"
threshold = 95.0
clear = 85.0
forSeconds = 600
severity = "critical"

[[alert_rules]]
name = "SlowPricing"
metric = "probe_latency_ms"
comparison = "above"
threshold = 500.0
severity = "warning"
"#,
    )
    .unwrap();
    let config = config_of(&["orchestra", "--config", path.to_str().unwrap(), "registry"]).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(config.health_interval, Duration::from_secs(10));
    assert_eq!(config.system_sample_every, Duration::from_secs(15));
    assert!(config.health_dependencies.contains_key("postgres"));
    let cpu: Vec<_> = config
        .alert_rules
        .iter()
        .filter(|r| r.name == "HighCpu")
        .collect();
    assert_eq!(
        cpu.len(),
        1,
        "the configured rule replaces the built-in one"
    );
    assert_eq!((cpu[0].threshold, cpu[0].for_seconds), (95.0, 600));
    assert!(config.alert_rules.iter().any(|r| r.name == "SlowPricing"));
    assert!(config.alert_rules.iter().any(|r| r.name == "LowDisk"));
}

#[test]
fn an_alert_rule_with_its_clear_threshold_on_the_wrong_side_is_refused() {
    let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        "[[alert_rules]]\nname = \"X\"\nmetric = \"m\"\ncomparison = \"above\"\n\
         threshold = 1.0\nclear = 2.0\nseverity = \"info\"\n",
    )
    .unwrap();
    let err =
        config_of(&["orchestra", "--config", path.to_str().unwrap(), "registry"]).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(err.contains("clear"), "{err}");
}

/// What the servers of a command line would run.
fn run_of(args: &[&str]) -> Result<ServerRun, String> {
    let cli = Cli::try_parse_from_args(args).map_err(|err| err.to_string())?;
    match cli.command {
        Command::Up(args) => Ok(args.run()),
        Command::Registry(args) => Ok(args.run()),
        Command::Gateway(args) => Ok(args.run()),
        Command::Logging(args) => Ok(args.run()),
        Command::Jobs(JobsCommand {
            action: None,
            server,
        }) => Ok(server.run()),
        _ => Err("not a server command".into()),
    }
}

fn config_of(args: &[&str]) -> Result<Config, String> {
    let run = run_of(args)?;
    run.options.to_config(run.single)
}

#[test]
fn servers_bind_loopback_unless_told_and_never_open_beyond_it_by_accident() {
    let config = config_of(&["orchestra", "up"]).unwrap();
    assert!(config.bind.is_loopback());
    assert!(config.service_tokens.is_none());

    let refused = config_of(&["orchestra", "--bind", "0.0.0.0", "up"]).unwrap_err();
    for named in [
        "JWT_SECRET",
        "--service-public-key",
        "--allow-unauthenticated",
    ] {
        assert!(refused.contains(named), "{refused}");
    }
    let open = config_of(&[
        "orchestra",
        "--bind",
        "0.0.0.0",
        "--allow-unauthenticated",
        "registry",
    ])
    .unwrap();
    assert!(open.allow_unauthenticated);
    let closed = config_of(&[
        "orchestra",
        "--bind",
        "0.0.0.0",
        "--jwt-secret",
        "a-control-plane-secret-of-32-bytes",
        "up",
    ])
    .unwrap();
    assert!(closed.service_tokens.is_some());
}

#[test]
fn a_short_secret_or_two_kinds_of_key_are_refused() {
    let short = config_of(&["orchestra", "--jwt-secret", "short", "up"]).unwrap_err();
    assert!(
        short.contains("JWT_SECRET") && short.contains("32"),
        "{short}"
    );
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../omc-orchestra/tests/fixtures/keys/ed25519.pub.pem"
    );
    let keyed = config_of(&["orchestra", "--service-public-key", key, "up"]).unwrap();
    assert!(keyed.service_tokens.is_some());
    let both = config_of(&[
        "orchestra",
        "--service-public-key",
        key,
        "--jwt-secret",
        "a-control-plane-secret-of-32-bytes",
        "up",
    ])
    .unwrap_err();
    assert!(both.contains("not both"), "{both}");
}

#[test]
fn debug_prints_of_the_command_line_and_config_hold_no_secret() {
    let args = [
        "orchestra",
        "--redis",
        "redis://app:redis-pw-secret@127.0.0.1:6379/0",
        "--jwt-secret",
        "a-control-plane-secret-of-32-bytes",
        "up",
    ];
    let cli = Cli::try_parse_from_args(args).unwrap();
    let mut config = config_of(&args).unwrap();
    config.health_dependencies.insert(
        "postgres".into(),
        "host=db user=app password=pg-pw-secret".into(),
    );
    for printed in [format!("{cli:?}"), format!("{config:?}")] {
        for secret in ["redis-pw-secret", "a-control-plane-secret", "pg-pw-secret"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("127.0.0.1:6379"), "{printed}");
    }
}

#[test]
fn connection_limits_come_from_the_http_table() {
    let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "[http]\nhead_timeout = 3\nmax_connections = 50\n").unwrap();
    let config = config_of(&["orchestra", "--config", path.to_str().unwrap(), "up"]).unwrap();
    assert_eq!(config.connections.head_timeout, Duration::from_secs(3));
    assert_eq!(config.connections.max_connections, 50);
    assert_eq!(config.connections.idle_timeout, Duration::from_secs(30));
    std::fs::write(&path, "[http]\nidle_timeout = 0\n").unwrap();
    let err = config_of(&["orchestra", "--config", path.to_str().unwrap(), "up"]).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(err.contains("http.idle_timeout"), "{err}");
}

#[test]
fn token_lifetimes_parse_with_units_and_bounds() {
    use token::parse_ttl;
    assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
    assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
    for bad in ["", "0s", "3w", "-1d", "99999999999999999999d", "20000d"] {
        assert!(parse_ttl(bad).is_err(), "{bad}");
    }
}

#[test]
fn gateway_routes_come_from_the_config_file() {
    let path = std::env::temp_dir().join(format!("orchestra-cli-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"
        gateway_port = 3100
        [gateway]
        access_log = true
        [gateway.auth]
        jwt_secret = "end-user-secret"
        [gateway.discovery]
        limits = { second = 50 }
        [[gateway.routes]]
        prefix = "/prices"
        service = "pricing-service"
        methods = ["GET"]
        auth = true
        cache_ttl_secs = 30
        [gateway.static_services]
        legacy-service = "http://10.0.0.9:8080"
        "#,
    )
    .unwrap();
    let config = config_of(&["orchestra", "--config", path.to_str().unwrap(), "gateway"]).unwrap();
    assert_eq!(config.gateway_port, 3100);
    assert!(config.gateway.access_log);
    assert_eq!(config.gateway.discovery.limits.second, Some(50));
    assert_eq!(config.gateway.routes[0].service, "pricing-service");
    assert_eq!(
        config.gateway.static_services["legacy-service"],
        "http://10.0.0.9:8080"
    );

    std::fs::write(
        &path,
        "[[gateway.routes]]\nprefix = \"nope\"\nservice = \"x\"\n",
    )
    .unwrap();
    let err = config_of(&["orchestra", "--config", path.to_str().unwrap(), "gateway"]).unwrap_err();
    assert!(err.contains("gateway.routes[0].prefix"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn durability_is_chosen_by_name_and_a_wrong_one_is_named() {
    let config = config_of(&["orchestra", "--durability", "aof+replica", "up"]).unwrap();
    assert_eq!(config.durability, Durability::AofReplica);
    assert_eq!(
        config_of(&["orchestra", "up"]).unwrap().durability,
        Durability::Memory
    );
    let err = config_of(&["orchestra", "--durability", "disk", "up"]).unwrap_err();
    assert!(err.contains("durability"), "{err}");
}

#[test]
fn server_options_may_come_before_the_command_as_they_always_could() {
    let run = run_of(&[
        "orchestra",
        "--redis-prefix",
        "up",
        "--port=4100",
        "registry",
    ])
    .unwrap();
    assert_eq!(run.single, Some(ServerKind::Registry));
    let config = run.options.to_config(run.single).unwrap();
    assert_eq!(
        (config.redis_prefix.as_str(), config.registry_port),
        ("up", 4100)
    );
    let config = config_of(&[
        "orchestra",
        "--allow-unauthenticated",
        "--bind",
        "0.0.0.0",
        "up",
    ]);
    assert!(config.unwrap().allow_unauthenticated);
    // An operator's command is not a server command: its options stay its own.
    assert!(Cli::try_parse_from_args(["orchestra", "--json", "services"]).is_err());
}

#[test]
fn jobs_without_a_subcommand_is_the_server_and_with_one_an_operator_command() {
    let server = run_of(&["orchestra", "jobs", "--port", "4113"]).unwrap();
    assert_eq!(server.single, Some(ServerKind::Jobs));
    assert_eq!(
        server.options.to_config(server.single).unwrap().jobs_port,
        4113
    );
    let cli = Cli::try_parse_from_args(["orchestra", "jobs", "ls", "--state", "failed"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Jobs(JobsCommand {
            action: Some(crate::ops::jobs::JobsAction::Ls(_)),
            ..
        })
    ));
    assert!(Cli::try_parse_from_args(["orchestra", "jobs", "--port", "1", "ls"]).is_err());
}

#[test]
fn every_command_line_is_well_formed() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn alert_receivers_come_from_flags_and_the_toml_file_and_hide_secrets() {
    let path = std::env::temp_dir().join(format!("orchestra-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"
alertmanager_urls = ["http://file-am:9093"]
alert_resend_every = 30
alert_group_wait = 2

[[alert_receivers]]
url = "http://hooks.example/orchestra"
headers = { Authorization = "Bearer hook-s3cret" }
"#,
    )
    .unwrap();
    let file = path.to_str().unwrap_or_default();
    let config = config_of(&["orchestra", "--config", file, "registry"]).unwrap();
    let receivers = &config.alert_receivers;
    assert_eq!(receivers.alertmanagers, ["http://file-am:9093"]);
    assert_eq!(receivers.resend_every, Duration::from_secs(30));
    assert_eq!(receivers.group_wait, Duration::from_secs(2));
    assert_eq!(receivers.webhooks.len(), 1);
    assert!(!format!("{config:?}").contains("hook-s3cret"));
    let flags = [
        "orchestra",
        "--config",
        file,
        "--alertmanager-url",
        "http://a:9093",
        "--alertmanager-url",
        "http://u:pw@b:9093",
        "registry",
    ];
    let config = config_of(&flags).unwrap();
    assert_eq!(config.alert_receivers.alertmanagers.len(), 2, "flags win");
    assert!(!format!("{config:?}").contains(":pw@"));
    let err = config_of(&["orchestra", "--alertmanager-url", "nonsense", "registry"]);
    assert!(err.is_err_and(|e| e.contains("alertmanager_urls")));
    let _ = std::fs::remove_file(&path);
}
