//! `ledgerflow registry serve`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use ledgerflow_registry::RegistryConfig;
use ledgerflow_service::Environment;
use ledgerflow_service::config::vars;

#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Serve the Confluent Schema Registry REST API until SIGINT or SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on [env: LEDGERFLOW_REGISTRY_LISTEN] [default: 127.0.0.1:8081].
    #[arg(long)]
    listen: Option<String>,
    /// Storage: `sqlite://FILE` (created when missing) or `postgres://...`
    /// [env: LEDGERFLOW_REGISTRY_DATABASE_URL] [default: sqlite://registry.db].
    #[arg(long)]
    database: Option<String>,
    /// Require HTTP basic authentication: a file of `user:password` lines
    /// [env: LEDGERFLOW_REGISTRY_BASIC_AUTH_FILE].
    #[arg(long)]
    basic_auth_file: Option<std::path::PathBuf>,
    /// Accept bearer tokens: a file with one token per line
    /// [env: LEDGERFLOW_REGISTRY_BEARER_TOKENS_FILE]. With either file, every request must
    /// authenticate (401, error code 40101, otherwise).
    #[arg(long)]
    bearer_tokens_file: Option<std::path::PathBuf>,
}

pub(crate) async fn run(cmd: RegistryCommand, env: &Environment) -> anyhow::Result<ExitCode> {
    let RegistryCommand::Serve(args) = cmd;
    let setting = |flag: Option<String>, name: &str, default: &str| {
        flag.or_else(|| env.get(name).map(str::to_owned))
            .unwrap_or_else(|| default.to_owned())
    };
    let listen = setting(args.listen, vars::REGISTRY_LISTEN, "127.0.0.1:8081");
    let database_url = setting(
        args.database,
        vars::REGISTRY_DATABASE_URL,
        "sqlite://registry.db",
    );
    let file = |flag: Option<std::path::PathBuf>, name: &str| {
        flag.or_else(|| env.get(name).map(std::path::PathBuf::from))
    };
    let credentials = ledgerflow_registry::Credentials::from_files(
        file(args.basic_auth_file, "LEDGERFLOW_REGISTRY_BASIC_AUTH_FILE").as_deref(),
        file(
            args.bearer_tokens_file,
            "LEDGERFLOW_REGISTRY_BEARER_TOKENS_FILE",
        )
        .as_deref(),
    )
    .context("reading the registry credentials")?;
    let state = ledgerflow_registry::connect(&RegistryConfig { database_url })
        .await
        .context("opening the registry store")?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    // Scripts and tests wait for this line to learn the port when they pass port 0.
    println!("listening on http://{addr}");
    ledgerflow_registry::serve_with(
        listener,
        state,
        credentials,
        ledgerflow_service::signal::stop_requested(),
    )
    .await
    .context("serving the registry")?;
    tracing::info!("schema registry stopped");
    Ok(ExitCode::SUCCESS)
}
