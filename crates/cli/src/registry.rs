//! `ledgerflow registry serve`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use ledgerflow_registry::RegistryConfig;

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Serve the Confluent Schema Registry REST API until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8081",
        env = "LEDGERFLOW_REGISTRY_LISTEN"
    )]
    listen: String,
    /// Storage: `sqlite://FILE` (created when missing) or `postgres://...`.
    #[arg(
        long,
        default_value = "sqlite://registry.db",
        env = "LEDGERFLOW_REGISTRY_DATABASE_URL"
    )]
    database: String,
}

pub(crate) async fn run(cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Serve(args) => serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let state = ledgerflow_registry::connect(&RegistryConfig {
        database_url: args.database,
    })
    .await
    .context("opening the registry store")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Scripts and tests wait for this line to learn the port when they pass port 0.
    println!("listening on http://{addr}");
    ledgerflow_registry::serve(listener, state, crate::shutdown::signal())
        .await
        .context("serving the registry")?;
    tracing::info!("schema registry stopped");
    Ok(ExitCode::SUCCESS)
}
