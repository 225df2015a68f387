//! The tenants file: one `[[tenants]]` table per tenant. Raw serde structs are validated into
//! [`TenantConfig`]; unknown keys are rejected so a typo never silently drops a setting.
//!
//! Secrets never appear here: ERP credentials and webhook signing secrets are referenced by an
//! environment variable name or a file path ([`SecretRef`]) and read only when used.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use ledgerflow_core::{Currency, EventType, TenantId};
use serde::{Deserialize, Serialize};

/// Which ERP payload shape a tenant's journals are rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErpKind {
    /// Oracle NetSuite (REST record API: journalEntry, invoice, customerPayment).
    Netsuite,
    /// Microsoft Dynamics 365 Finance (OData general journal lines).
    Dynamics365,
    /// SAP S/4HANA (journal entry post API).
    S4hana,
    /// Oracle Fusion Cloud Financials (journal import / receivables).
    OracleFusion,
}

impl ErpKind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netsuite => "netsuite",
            Self::Dynamics365 => "dynamics365",
            Self::S4hana => "s4hana",
            Self::OracleFusion => "oracle_fusion",
        }
    }
}

impl fmt::Display for ErpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a secret lives. The secret itself is never in the tenants file, never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum SecretRef {
    /// Read from this environment variable.
    Env {
        /// Variable name.
        env: String,
    },
    /// Read from this file (trailing newline trimmed).
    File {
        /// File path; relative paths are relative to the tenants file.
        file: PathBuf,
    },
}

/// A tenant's ERP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpTarget {
    /// Payload shape.
    pub kind: ErpKind,
    /// Base URL the dispatcher POSTs to.
    pub endpoint: String,
    /// Bearer credential reference.
    pub credential: SecretRef,
}

/// General-ledger accounts the receivables journals post to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountMapping {
    /// Accounts receivable (trade debtors).
    pub receivable: String,
    /// Revenue account for product families without their own mapping.
    pub revenue_default: String,
    /// Revenue account per product family.
    #[serde(default)]
    pub revenue_by_family: BTreeMap<String, String>,
    /// Sales tax / VAT payable.
    pub tax_payable: String,
    /// Cash or processor clearing account that receives captured payments net of fees.
    pub cash_clearing: String,
    /// Payment processing fee expense.
    pub payment_fees: String,
    /// Unapplied cash / customer credit: payments not (yet) applied to an invoice, over-payments.
    pub unapplied_cash: String,
}

impl AccountMapping {
    /// Revenue account for a product family.
    pub fn revenue_for(&self, family: &str) -> &str {
        self.revenue_by_family
            .get(family)
            .map_or(&self.revenue_default, String::as_str)
    }
}

/// One webhook endpoint of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Stable endpoint id (part of the webhook-id).
    pub id: String,
    /// URL notifications are POSTed to.
    pub url: String,
    /// Signing secret reference (`whsec_` base64 secrets, Standard Webhooks).
    pub secret: SecretRef,
    /// Event types delivered; empty means all notification types.
    #[serde(default)]
    pub events: Vec<EventType>,
}

/// A validated tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Tenant id.
    pub tenant_id: TenantId,
    /// Legal entity that owns the receivables.
    pub legal_entity: String,
    /// Functional (book) currency.
    pub functional_currency: Currency,
    /// ERP target; none keeps the subledger only.
    #[serde(default)]
    pub erp: Option<ErpTarget>,
    /// GL account mapping.
    pub accounts: AccountMapping,
    /// Webhook endpoints.
    #[serde(default)]
    pub webhooks: Vec<WebhookEndpoint>,
    /// Outbound deliveries per second for this tenant (ERP and webhooks); none = unlimited.
    #[serde(default)]
    pub rate_limit_per_sec: Option<u32>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// Tenants, in any order; ids must be unique.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}
