//! ledgerflow-tenants: who a tenant is and where its effects go.

mod config;

pub use config::{
    AccountMapping, ErpKind, ErpTarget, SecretRef, TenantConfig, TenantsFile, WebhookEndpoint,
};
