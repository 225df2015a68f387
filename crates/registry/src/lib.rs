//! ledgerflow-registry: a Confluent Schema Registry compatible REST server, Avro only.
//!
//! Producers register the billing event schemas here and consumers resolve the schema id in
//! every record's 5-byte Confluent header against it, so the API follows Confluent's: the same
//! paths, bodies, error codes (`{"error_code":40401,"message":"Subject 'x' not found."}`),
//! soft/permanent deletes and compatibility levels. Storage is picked by URL:
//! `sqlite://path?mode=rwc` or `postgres://...`.
//!
//! Layers, outermost first: `api` (HTTP routes and encoding), `registry` (Confluent's rules,
//! the id cache and the write lock), `compat` (compatibility levels over apache-avro's resolution
//! check), `schema` (the whitespace-insensitive identity of a schema), `store` (SQL shared by
//! both backends). Client mistakes are `rejection::Rejection` replies; failures of the service
//! itself are [`RegistryError`]; both routes and rejections answer through `reply` (the Confluent
//! media type).
//!
//! ```no_run
//! # async fn run() -> Result<(), ledgerflow_registry::RegistryError> {
//! use ledgerflow_registry::{RegistryConfig, connect, serve};
//!
//! let cfg = RegistryConfig { database_url: "sqlite://registry.db?mode=rwc".into() };
//! let state = connect(&cfg).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await.expect("bind");
//! serve(listener, state, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod api;
mod auth;
mod compat;
mod error;
mod registry;
mod rejection;
mod reply;
mod schema;
mod store;

pub use auth::Credentials;
pub use error::RegistryError;
pub use registry::RegistryState;

/// Where the registry keeps its schemas.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `sqlite://path?mode=rwc` (creates the file) or `postgres://user@host:port/db`.
    pub database_url: String,
}

/// Opens the store named by `cfg.database_url` and creates its tables if they are missing
/// (idempotent, so every start may run it).
pub async fn connect(cfg: &RegistryConfig) -> Result<RegistryState, RegistryError> {
    RegistryState::open(&cfg.database_url).await
}

/// The registry's HTTP routes, for embedding or for `serve`.
pub fn router(state: RegistryState) -> axum::Router {
    api::router(state)
}

/// The routes behind authentication when `credentials` requires any.
pub fn router_with(state: RegistryState, credentials: Credentials) -> axum::Router {
    let routes = api::router(state);
    if !credentials.is_enabled() {
        return routes;
    }
    routes.layer(axum::middleware::from_fn_with_state(
        std::sync::Arc::new(credentials),
        auth::require,
    ))
}

/// Serves the registry on `listener` until `shutdown` completes, then finishes in-flight
/// requests and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: RegistryState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RegistryError> {
    serve_with(listener, state, Credentials::none(), shutdown).await
}

/// [`serve`] with authentication.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: RegistryState,
    credentials: Credentials,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RegistryError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, authentication = credentials.is_enabled(), "schema registry listening");
    }
    axum::serve(listener, router_with(state, credentials))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| RegistryError::Serve { source })
}
