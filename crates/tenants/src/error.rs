//! The crate's one error type.

use std::path::PathBuf;

use ledgerflow_core::TenantId;

/// Everything that can go wrong loading tenants or reading a secret.
///
/// Messages never contain a secret value: secret errors name the environment variable or the
/// file, and sources that could echo a value (a non-Unicode variable) are not kept.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantsError {
    /// The tenants file could not be read.
    #[error("cannot read tenants file {}", path.display())]
    Read {
        /// The tenants file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The tenants file is not valid TOML or does not match the schema (unknown key, missing
    /// field, bad tenant id or currency). The source renders TOML's line/column snippet.
    #[error("invalid tenants file {}{}", path.display(), at_line(*location))]
    Parse {
        /// The tenants file, or `<memory>` for text parsed without a file.
        path: PathBuf,
        /// 1-based line and column of the error, when TOML reports a position.
        location: Option<(usize, usize)>,
        /// TOML's error, with the message and the offending line.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The tenants could not be rendered as TOML.
    #[error("cannot render the tenants as toml")]
    Render(#[source] toml::ser::Error),
    /// Two tenants share an id.
    #[error("duplicate tenant id {tenant}")]
    DuplicateTenant {
        /// The id given more than once.
        tenant: TenantId,
    },
    /// Two webhook endpoints of one tenant share an id.
    #[error("tenant {tenant}: duplicate webhook endpoint id {id:?}")]
    DuplicateWebhook {
        /// The tenant.
        tenant: TenantId,
        /// The endpoint id given more than once.
        id: String,
    },
    /// A field of a tenant has an invalid value.
    #[error("tenant {tenant}: {field} {reason}")]
    Invalid {
        /// The tenant.
        tenant: TenantId,
        /// Dotted path of the field, e.g. `accounts.receivable` or `webhooks[ops].url`.
        field: String,
        /// What is wrong, e.g. `must not be empty`.
        reason: String,
    },
    /// An `[[erp_accounts]]` entry has an invalid value.
    #[error("erp account {kind}/{account}: {field} {reason}")]
    InvalidAccount {
        /// ERP kind.
        kind: crate::ErpKind,
        /// Account id.
        account: String,
        /// The key, e.g. `concurrency`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// Two `[[erp_accounts]]` entries name the same account.
    #[error("duplicate erp account {kind}/{account}")]
    DuplicateAccount {
        /// ERP kind.
        kind: crate::ErpKind,
        /// Account id.
        account: String,
    },
    /// The registry was built without a file, so there is nothing to reload.
    #[error("the tenant registry was not loaded from a file")]
    NoFile,
    /// A secret's environment variable is unset or unusable.
    #[error("cannot read secret from environment variable {var}: {reason}")]
    SecretEnv {
        /// The variable name.
        var: String,
        /// Why, without the value (`not set`, `not valid unicode`).
        reason: &'static str,
    },
    /// A secret file could not be read.
    #[error("cannot read secret file {}", path.display())]
    SecretFile {
        /// The secret file.
        path: PathBuf,
        /// The I/O failure (never contains the file's content).
        #[source]
        source: std::io::Error,
    },
    /// A secret resolved to an empty string.
    #[error("secret from {from} is empty")]
    SecretEmpty {
        /// `environment variable NAME` or `file PATH`.
        from: String,
    },
}

fn at_line(location: Option<(usize, usize)>) -> String {
    location.map_or_else(String::new, |(line, column)| {
        format!(" at line {line}, column {column}")
    })
}
