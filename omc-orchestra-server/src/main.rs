//! The `orchestra` binary.
// The command line's future holds every command's; its layout needs more than the default depth.
#![recursion_limit = "256"]

use omc_orchestra_server::cli::{run, Cli};

/// mimalloc: the proxy and the ingest paths allocate small buffers on every request, on
/// several threads, where it is markedly cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let code = run(Cli::parse_args()).await;
    std::process::exit(code);
}
