//! ledgerflow-tenants: who a tenant is and where its effects go.
//!
//! The tenants file (TOML, one `[[tenants]]` table per tenant, see [`TenantsFile`]) is loaded
//! and validated into a [`TenantRegistry`]: lock-free lookups by [`ledgerflow_core::TenantId`]
//! from every consumer, hot reload on SIGHUP or when the file changes
//! ([`TenantRegistry::spawn_watcher`]), and the last good tenants kept when a reload fails.
//! Secrets (ERP credentials, webhook signing secrets) are only referenced in the file
//! ([`SecretRef`]) and read with [`read_secret`] when a dispatcher needs them; the registry
//! never holds a secret value.

mod config;
mod erp;
mod error;
#[cfg(test)]
mod fixtures;
mod registry;
mod secret;
mod validate;
mod watcher;

pub use config::{
    AccountMapping, NotificationKind, NotificationTemplates, SecretRef, TenantConfig, TenantsFile,
    WebhookEndpoint, template_placeholders,
};
pub use erp::{
    AccountLimits, Dynamics365Mapping, ErpAccountConfig, ErpAuth, ErpKind, ErpMode, ErpTarget,
    JwtAlgorithm, NetsuiteMapping, OracleFusionMapping, S4hanaMapping,
};
pub use error::TenantsError;
pub use registry::TenantRegistry;
pub use secret::{read_secret, read_secret_with_env};
