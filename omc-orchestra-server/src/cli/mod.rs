//! The `orchestra` command line: the servers (`up`, `registry`, `gateway`, `jobs`,
//! `logging`), `token`, and the operators' commands over the HTTP API (`ops`).
//! Each command's `--help` shows its own options only, with their defaults and
//! environment variables.

mod serve;
mod token;

pub use serve::{
    DiscoveryOptions, GatewayArgs, JobsServerArgs, LogFormat, LoggingArgs, LoggingOptions, Options,
    RegistryArgs, RegistryOptions, ServeArgs, ServerRun, UpArgs,
};
pub use token::TokenArgs;

use crate::ops;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;

/// omc-orchestra: service registry, API gateway, jobs and logging for the OMC ERP.
#[derive(Debug, Parser)]
#[command(name = "orchestra", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run all four servers in one process: registry 3010, gateway 3000, jobs 3013,
    /// logging 3014.
    Up(UpArgs),
    /// Run the registry server only (registry, events, health, WebSocket; port 3010).
    Registry(RegistryArgs),
    /// Run the gateway server only (port 3000).
    Gateway(GatewayArgs),
    /// Run the jobs server only (port 3013); with a subcommand, list, retry and cancel
    /// jobs on a running one.
    Jobs(JobsCommand),
    /// Run the logging server only (port 3014).
    Logging(LoggingArgs),
    /// Mint a control-plane service token from JWT_SECRET (or --private-key) and print it.
    Token(TokenArgs),
    /// The registered instances: list, show, discover, deregister.
    Services(GroupCommand<ops::services::ServicesAction>),
    /// Cron schedules: list, add, remove.
    Schedules(GroupCommand<ops::schedules::SchedulesAction>),
    /// Events: follow, publish, replay.
    #[command(subcommand)]
    Events(ops::events::EventsAction),
    /// Log records: follow, search.
    #[command(subcommand)]
    Logs(ops::logs::LogsAction),
    /// Alerts: active now, history.
    Alerts(GroupCommand<ops::alerts::AlertsAction>),
    /// One screen: service counts, firing alerts, queue depths, error rates.
    Status(ops::status::StatusArgs),
}

/// `orchestra jobs`: the jobs server, or an operator's command about jobs.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_help = serve::SERVER_HELP)]
pub struct JobsCommand {
    /// The operator's command; none runs the server.
    #[command(subcommand)]
    pub action: Option<ops::jobs::JobsAction>,
    /// The server's options.
    #[command(flatten)]
    pub server: JobsServerArgs,
}

/// A group of operators' commands whose first (`ls`) runs when none is named.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GroupCommand<A: Subcommand> {
    /// The command; `ls` when none is named.
    #[command(subcommand)]
    pub action: Option<A>,
    /// The connection of `ls` when it runs as the default.
    #[command(flatten)]
    pub client: ops::ClientArgs,
}

/// Server commands whose options may come before the command's name, as in
/// `orchestra --bind 0.0.0.0 up`: how the command line read before each command had
/// options of its own.
const SERVER_COMMANDS: [&str; 6] = ["up", "registry", "gateway", "jobs", "logging", "token"];

impl Cli {
    /// Parse this process's arguments; exits with clap's message on a bad command line.
    pub fn parse_args() -> Self {
        Self::parse_from_args(std::env::args_os())
    }

    /// Parse `args` (the program name first), accepting server options before the
    /// command's name; exits with clap's message on a bad command line.
    pub fn parse_from_args<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        match Self::try_parse_from_args(args) {
            Ok(cli) => cli,
            Err(err) => err.exit(),
        }
    }

    /// [`Cli::parse_from_args`] that answers the error instead of exiting.
    pub fn try_parse_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args = hoist_command(args.into_iter().map(Into::into).collect());
        let matches = Self::command().try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }
}

/// Move a server command's name in front of the options given before it.
fn hoist_command(mut args: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let takes_value = |flag: &str| {
        SERVER_COMMANDS.iter().any(|name| {
            command.find_subcommand(name).is_some_and(|sub| {
                sub.get_arguments()
                    .any(|arg| arg.get_long() == Some(flag) && arg.get_action().takes_values())
            })
        })
    };
    let mut at = 1;
    while let Some(text) = args.get(at).and_then(|a| a.to_str()) {
        let Some(flag) = text.strip_prefix("--").filter(|f| !f.is_empty()) else {
            break;
        };
        at += if !flag.contains('=') && takes_value(flag) {
            2
        } else {
            1
        };
    }
    let named = args
        .get(at)
        .and_then(|a| a.to_str())
        .is_some_and(|name| SERVER_COMMANDS.contains(&name));
    if at > 1 && named {
        let name = args.remove(at);
        args.insert(1, name);
    }
    args
}

/// Run the command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Up(args) => serve::run(args.run()).await,
        Command::Registry(args) => serve::run(args.run()).await,
        Command::Gateway(args) => serve::run(args.run()).await,
        Command::Logging(args) => serve::run(args.run()).await,
        Command::Jobs(JobsCommand {
            action: None,
            server,
        }) => serve::run(server.run()).await,
        Command::Jobs(JobsCommand {
            action: Some(action),
            ..
        }) => ops::finish(ops::jobs::run(action).await),
        Command::Token(args) => token::mint(&args),
        Command::Services(group) => ops::finish(
            ops::services::run(
                group
                    .action
                    .unwrap_or_else(|| ops::services::ServicesAction::listing(group.client)),
            )
            .await,
        ),
        Command::Schedules(group) => ops::finish(
            ops::schedules::run(
                group
                    .action
                    .unwrap_or_else(|| ops::schedules::SchedulesAction::listing(group.client)),
            )
            .await,
        ),
        Command::Alerts(group) => ops::finish(
            ops::alerts::run(
                group
                    .action
                    .unwrap_or_else(|| ops::alerts::AlertsAction::listing(group.client)),
            )
            .await,
        ),
        Command::Events(action) => ops::finish(ops::events::run(action).await),
        Command::Logs(action) => ops::finish(ops::logs::run(action).await),
        Command::Status(args) => ops::finish(ops::status::run(args).await),
    }
}

#[cfg(test)]
mod tests;
