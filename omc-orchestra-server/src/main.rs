//! The `orchestra` binary.

use clap::Parser;
use omc_orchestra_server::cli::{run, Cli};

#[tokio::main]
async fn main() {
    let code = run(Cli::parse()).await;
    std::process::exit(code);
}
