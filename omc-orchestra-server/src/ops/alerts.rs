//! `orchestra alerts …`: the alerts active now and their history.

use super::{age, cell, ClientArgs, Operator, Outcome, PlainArgs, Server, Table};
use clap::Subcommand;
use serde_json::Value;

/// `orchestra alerts [ls|history]`; `ls` when none is named.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// The alerts pending or firing now.
    Ls(PlainArgs),
    /// Firing and resolved notices, oldest first.
    History(PlainArgs),
}

impl AlertsAction {
    /// `ls` over `client`: what the group command runs without a subcommand.
    pub fn listing(client: ClientArgs) -> Self {
        Self::Ls(PlainArgs { client })
    }
}

/// Run `orchestra alerts …`.
pub(crate) async fn run(action: AlertsAction) -> Outcome {
    let (args, history) = match action {
        AlertsAction::Ls(args) => (args, false),
        AlertsAction::History(args) => (args, true),
    };
    let op = Operator::new(&args.client)?;
    let alerts = op
        .client
        .alerts()
        .await
        .map_err(|err| op.fail(Server::Registry, err))?;
    if history {
        op.out.show(&alerts["history"], history_table);
    } else {
        op.out.show(&alerts["active"], active_table);
    }
    Ok(())
}

/// One row per active alert.
pub(crate) fn active_table(active: &Value) -> Table {
    let mut table = Table::new(
        &["RULE", "STATE", "SEVERITY", "SINCE", "SUMMARY"],
        "no alert is pending or firing",
    );
    for alert in active.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&alert["rule"]),
            cell(&alert["state"]),
            cell(&alert["severity"]),
            format!("{} ago", age(&alert["since"])),
            cell(&alert["summary"]),
        ]);
    }
    table
}

fn history_table(history: &Value) -> Table {
    let mut table = Table::new(
        &["AT", "RULE", "STATE", "SEVERITY", "SUMMARY"],
        "no alert has fired",
    );
    for notice in history.as_array().into_iter().flatten() {
        table.row(vec![
            cell(&notice["at"]),
            cell(&notice["rule"]),
            cell(&notice["state"]),
            cell(&notice["severity"]),
            cell(&notice["summary"]),
        ]);
    }
    table
}
