//! The operators' commands (`orchestra services|jobs|schedules|events|logs|alerts|status`):
//! the servers' HTTP API through the SDK's [`OrchestraClient`], printed as aligned tables
//! or, with `--json`, as JSON. A failure is one line on stderr and exit status 1.

pub(crate) mod alerts;
pub(crate) mod events;
mod gateway;
pub(crate) mod jobs;
pub(crate) mod logs;
mod output;
pub(crate) mod schedules;
pub(crate) mod services;
pub(crate) mod span;
pub(crate) mod status;

use clap::Args;
use omc_orchestra::access::{Grants, Scope, TokenIssuer};
use omc_orchestra_client::{
    ClientError, OrchestraClient, DEFAULT_JOBS_URL, DEFAULT_LOGGING_URL, DEFAULT_REGISTRY_URL,
};
pub(crate) use output::{age, cell, percent, record_table, Output, Table};
use std::time::Duration;

/// Where the servers are and who calls them: the SDK's environment variables.
#[derive(Clone, Args)]
#[command(next_help_heading = "Connection")]
pub struct ClientArgs {
    /// The registry server (services, events, alerts, status).
    #[arg(long, env = "SERVICE_REGISTRY_URL", default_value = DEFAULT_REGISTRY_URL)]
    pub registry_url: String,
    /// The jobs server (jobs, schedules, workers).
    #[arg(long, env = "JOB_SCHEDULER_URL", default_value = DEFAULT_JOBS_URL)]
    pub jobs_url: String,
    /// The logging server (logs).
    #[arg(long, env = "LOGGING_SERVICE_URL", default_value = DEFAULT_LOGGING_URL)]
    pub logging_url: String,
    /// A control-plane token (`orchestra token --admin`) sent with every request.
    #[arg(long, env = "ORCHESTRA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Without a token: the servers' secret, from which a short-lived admin token is made.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Print JSON instead of a table, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// A command about one thing (instance, job, schedule) named by its id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Its id, as `ls` shows it.
    pub id: String,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// A command with no options of its own.
#[derive(Debug, Args)]
pub struct PlainArgs {
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

// Hand-written so that a printed command line never shows a token or the secret.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("registry_url", &self.registry_url)
            .field("jobs_url", &self.jobs_url)
            .field("logging_url", &self.logging_url)
            .field("json", &self.json)
            .finish_non_exhaustive()
    }
}

/// How long the admin token made from `JWT_SECRET` lives: one command's worth.
const OPERATOR_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

/// Which server a call went to, for the one-line error.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Server {
    /// 3010: registry, events, alerts.
    Registry,
    /// 3013: jobs and schedules.
    Jobs,
    /// 3014: logs.
    Logging,
}

/// A failed command: the line printed after `error: `.
#[derive(Debug)]
pub(crate) struct Failure(pub String);

/// What a command's run answers.
pub(crate) type Outcome = Result<(), Failure>;

/// One command's connection to the servers and its output.
pub(crate) struct Operator {
    /// The SDK client.
    pub(crate) client: OrchestraClient,
    /// How to print.
    pub(crate) out: Output,
    urls: [String; 3],
    /// The token sent with every call, for the calls the SDK does not make (the live
    /// feed's WebSocket).
    token: Option<String>,
}

impl Operator {
    /// The operator `args` describe.
    pub(crate) fn new(args: &ClientArgs) -> Result<Self, Failure> {
        let or_default = |url: &str, default: &str| {
            let url = url.trim();
            if url.is_empty() { default } else { url }
                .trim_end_matches('/')
                .to_owned()
        };
        let urls = [
            or_default(&args.registry_url, DEFAULT_REGISTRY_URL),
            or_default(&args.jobs_url, DEFAULT_JOBS_URL),
            or_default(&args.logging_url, DEFAULT_LOGGING_URL),
        ];
        let mut client = OrchestraClient::new(urls[0].clone())
            .with_jobs_url(urls[1].clone())
            .with_logging_url(urls[2].clone())
            .with_service_name("operator");
        let set = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
        let mut sent = None;
        if let Some(token) = set(&args.token) {
            client = client.with_token(token.clone());
            sent = Some(token);
        } else if let Some(secret) = set(&args.jwt_secret) {
            let token = TokenIssuer::from_secret(secret.as_bytes())
                .and_then(|issuer| {
                    issuer.mint(
                        "operator",
                        Grants::NONE.with(Scope::Admin),
                        OPERATOR_TOKEN_TTL,
                    )
                })
                .map_err(|err| Failure(format!("JWT_SECRET: {err}")))?;
            client = client.with_token(token.clone());
            sent = Some(token);
        }
        Ok(Self {
            client,
            out: Output::detect(args.json),
            urls,
            token: sent,
        })
    }

    /// The registry's URL, as the operator gave it.
    pub(crate) fn registry_url(&self) -> &str {
        &self.urls[0]
    }

    /// The token every call carries, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Turn a failed call to `server` into the one line an operator reads.
    pub(crate) fn fail(&self, server: Server, err: ClientError) -> Failure {
        let (name, url) = match server {
            Server::Registry => ("registry", &self.urls[0]),
            Server::Jobs => ("jobs server", &self.urls[1]),
            Server::Logging => ("logging server", &self.urls[2]),
        };
        Failure(match err {
            ClientError::Transport(err) => {
                format!("cannot reach the {name} at {url}: {}", root_cause(&err))
            }
            ClientError::Http {
                status,
                error,
                message,
                ..
            } => format!("the {name} at {url} answered {status} {error}: {message}"),
            other => format!("{name} at {url}: {other}"),
        })
    }
}

/// The one line for a live feed (WebSocket) that failed on the registry at `url`.
pub(crate) fn feed_failure(url: &str, err: tokio_tungstenite::tungstenite::Error) -> Failure {
    use tokio_tungstenite::tungstenite::Error as WsError;
    Failure(match err {
        WsError::Io(err) => format!("cannot reach the registry at {url}: {}", root_cause(&err)),
        WsError::Http(answer) => {
            let body: serde_json::Value = answer
                .body()
                .as_deref()
                .and_then(|body| serde_json::from_slice(body).ok())
                .unwrap_or_default();
            format!(
                "the registry at {url} answered {} {}: {}",
                answer.status().as_u16(),
                output::cell(&body["error"]),
                output::cell(&body["message"]),
            )
        }
        other => format!("the live feed of the registry at {url}: {other}"),
    })
}

/// The innermost reason of a transport error, e.g. `connection refused`, without the
/// operating system's error number.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text = cause.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "no answer".to_owned(),
    }
}

/// Turn a command's outcome into the exit status, printing a failure as one line.
pub(crate) fn finish(outcome: Result<(), Failure>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(Failure(message)) => {
            eprintln!("error: {}", message.replace('\n', " "));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_cause_is_short_and_lower_case() {
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(root_cause(&io), "connection refused");
        let empty = std::io::Error::other("");
        assert_eq!(root_cause(&empty), "no answer");
    }
}
