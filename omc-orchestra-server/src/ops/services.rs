//! `orchestra services`: the registered instances, discovery and deregistration.

use super::{
    age, cell, record_table, ClientArgs, Failure, IdArgs, Operator, Outcome, Server, Table,
};
use clap::{Args, Subcommand};
use omc_orchestra_client::ServiceFilter;
use serde_json::Value;

/// `orchestra services [ls|show ID|discover NAME|deregister ID]`; `ls` when none is
/// named.
#[derive(Debug, Subcommand)]
pub enum ServicesAction {
    /// List the registered instances.
    Ls(ListArgs),
    /// One instance in full.
    Show(IdArgs),
    /// What discovery serves for a service: its healthy instances and the one picked.
    Discover(DiscoverArgs),
    /// Remove an instance from the registry.
    Deregister(IdArgs),
}

/// `orchestra services ls`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only instances of this service.
    #[arg(long)]
    pub name: Option<String>,
    /// Only instances with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// Only instances in this status: passing, warning or critical.
    #[arg(long)]
    pub status: Option<String>,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `orchestra services discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The service's name, e.g. pricing-service.
    pub name: String,
    /// Where the servers are and how to print.
    #[command(flatten)]
    pub client: ClientArgs,
}

impl ServicesAction {
    /// `ls` over `client`: what the group command runs without a subcommand.
    pub fn listing(client: ClientArgs) -> Self {
        Self::Ls(ListArgs {
            name: None,
            tag: None,
            status: None,
            client,
        })
    }
}

/// Run `orchestra services …`.
pub(crate) async fn run(action: ServicesAction) -> Outcome {
    match action {
        ServicesAction::Ls(args) => list(args).await,
        ServicesAction::Show(args) => show(args).await,
        ServicesAction::Discover(args) => discover(args).await,
        ServicesAction::Deregister(args) => deregister(args).await,
    }
}

async fn list(args: ListArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let status = match args.status.as_deref() {
        None => None,
        Some(text) => Some(
            serde_json::from_value(Value::String(text.to_ascii_lowercase())).map_err(|_| {
                Failure(format!(
                    "--status `{text}`: use passing, warning or critical"
                ))
            })?,
        ),
    };
    let filter = ServiceFilter {
        name: args.name,
        tag: args.tag,
        status,
        ..ServiceFilter::default()
    };
    let instances = op
        .client
        .services(&filter)
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    let value = serde_json::to_value(&instances).unwrap_or_default();
    op.out.show(&value, instance_table);
    Ok(())
}

/// One row per instance.
pub(crate) fn instance_table(instances: &Value) -> Table {
    let mut table = Table::new(
        &[
            "ID",
            "NAME",
            "VERSION",
            "ADDRESS",
            "STATUS",
            "HEARTBEAT",
            "TAGS",
        ],
        "no instances registered",
    );
    for instance in instances.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&instance["id"]),
            cell(&instance["name"]),
            cell(&instance["version"]),
            format!("{}:{}", cell(&instance["host"]), cell(&instance["port"])),
            cell(&instance["status"]),
            format!("{} ago", age(&instance["lastHeartbeat"])),
            cell(&instance["tags"]),
        ]);
    }
    table
}

async fn show(args: IdArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let instance = op
        .client
        .instance(&args.id)
        .await
        .map_err(|err| op.fail(Server::Registry, err))?
        .ok_or_else(|| Failure(format!("no instance `{}` is registered", args.id)))?;
    op.out.show(
        &serde_json::to_value(&instance).unwrap_or_default(),
        record_table,
    );
    Ok(())
}

async fn discover(args: DiscoverArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    let found = op
        .client
        .discover_all(&args.name)
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    let value = serde_json::to_value(&found).unwrap_or_default();
    op.out.show(&value, |found| {
        let mut table = instance_table(&found["instances"]);
        let picked = cell(&found["selected"]["id"]);
        table.note(if picked.is_empty() {
            "selected: none (no healthy instance)".into()
        } else {
            format!("selected: {picked}")
        });
        table
    });
    Ok(())
}

async fn deregister(args: IdArgs) -> Outcome {
    let op = Operator::new(&args.client)?;
    op.client
        .deregister(&args.id)
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    let value = serde_json::json!({"deregistered": args.id});
    op.out.show(&value, |_| {
        let mut table = Table::new(&["DEREGISTERED"], "");
        table.row(vec![args.id.clone()]);
        table
    });
    Ok(())
}
