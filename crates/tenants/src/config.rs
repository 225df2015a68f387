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

use crate::erp::{ErpAccountConfig, ErpTarget};

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
    /// JSON bodies of this endpoint's notifications; a kind without a template uses
    /// [`NotificationKind::default_template`].
    #[serde(default, skip_serializing_if = "NotificationTemplates::is_empty")]
    pub templates: NotificationTemplates,
}

impl WebhookEndpoint {
    /// Whether this endpoint receives notifications of `event_type` (an empty filter means
    /// every notification type).
    pub fn subscribes_to(&self, event_type: EventType) -> bool {
        self.events.is_empty() || self.events.contains(&event_type)
    }

    /// The template of `kind`: the configured one, else the default.
    pub fn template(&self, kind: NotificationKind) -> &str {
        self.templates
            .get(kind)
            .unwrap_or_else(|| kind.default_template())
    }
}

/// The notifications the `notifications` consumer sends, one per handled event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// `invoice_finalized` -> "invoice ready".
    InvoiceReady,
    /// `payment_captured` -> "payment receipt".
    PaymentReceipt,
    /// `subscription_activated` -> "welcome".
    Welcome,
    /// `credit_memo_issued` -> "credit issued".
    CreditIssued,
}

/// Placeholders every notification kind can use.
const COMMON_PLACEHOLDERS: &[&str] = &[
    "event_id",
    "event_type",
    "tenant_id",
    "legal_entity",
    "occurred_at",
    "customer_id",
    "currency",
    "amount",
];

impl NotificationKind {
    /// Every kind.
    pub const ALL: [NotificationKind; 4] = [
        Self::InvoiceReady,
        Self::PaymentReceipt,
        Self::Welcome,
        Self::CreditIssued,
    ];

    /// Stable snake_case name (the key in `templates`, the `kind` column of the outbox).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvoiceReady => "invoice_ready",
            Self::PaymentReceipt => "payment_receipt",
            Self::Welcome => "welcome",
            Self::CreditIssued => "credit_issued",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind sent for an event type; `None` for types without a notification.
    pub fn for_event(event_type: EventType) -> Option<Self> {
        match event_type {
            EventType::InvoiceFinalized => Some(Self::InvoiceReady),
            EventType::PaymentCaptured => Some(Self::PaymentReceipt),
            EventType::SubscriptionActivated => Some(Self::Welcome),
            EventType::CreditMemoIssued => Some(Self::CreditIssued),
            EventType::CustomerUpserted
            | EventType::SubscriptionCanceled
            | EventType::UsageAggregated
            | EventType::InvoiceVoided
            | EventType::PaymentRefunded => None,
        }
    }

    /// The event type this kind is sent for.
    pub fn event_type(self) -> EventType {
        match self {
            Self::InvoiceReady => EventType::InvoiceFinalized,
            Self::PaymentReceipt => EventType::PaymentCaptured,
            Self::Welcome => EventType::SubscriptionActivated,
            Self::CreditIssued => EventType::CreditMemoIssued,
        }
    }

    /// Placeholders of this kind besides the common ones (`event_id`, `event_type`,
    /// `tenant_id`, `legal_entity`, `occurred_at`, `customer_id`, `currency`, `amount`).
    fn own_placeholders(self) -> &'static [&'static str] {
        match self {
            Self::InvoiceReady => &[
                "invoice_id",
                "invoice_number",
                "subtotal",
                "tax",
                "issued_at",
                "due_at",
            ],
            Self::PaymentReceipt => &["payment_id", "invoice_id", "fee", "method", "captured_at"],
            Self::Welcome => &[
                "subscription_id",
                "plan_id",
                "billing_interval",
                "started_at",
            ],
            Self::CreditIssued => &[
                "credit_memo_id",
                "credit_memo_number",
                "invoice_id",
                "reason",
                "issued_at",
            ],
        }
    }

    /// Whether `{{name}}` can be used in a template of this kind.
    pub fn has_placeholder(self, name: &str) -> bool {
        COMMON_PLACEHOLDERS.contains(&name) || self.own_placeholders().contains(&name)
    }

    /// Every placeholder of this kind, common ones first.
    pub fn placeholders(self) -> Vec<&'static str> {
        COMMON_PLACEHOLDERS
            .iter()
            .chain(self.own_placeholders())
            .copied()
            .collect()
    }

    /// The body used when an endpoint has no template of this kind: the Standard Webhooks
    /// payload shape (`type`, `timestamp`, `data`).
    pub fn default_template(self) -> &'static str {
        match self {
            Self::InvoiceReady => {
                r#"{"type": "invoice.ready", "timestamp": "{{occurred_at}}", "data": {"event_id": "{{event_id}}", "tenant_id": "{{tenant_id}}", "customer_id": "{{customer_id}}", "invoice_id": "{{invoice_id}}", "invoice_number": "{{invoice_number}}", "amount": "{{amount}}", "currency": "{{currency}}", "due_at": "{{due_at}}"}}"#
            }
            Self::PaymentReceipt => {
                r#"{"type": "payment.receipt", "timestamp": "{{occurred_at}}", "data": {"event_id": "{{event_id}}", "tenant_id": "{{tenant_id}}", "customer_id": "{{customer_id}}", "payment_id": "{{payment_id}}", "invoice_id": "{{invoice_id}}", "amount": "{{amount}}", "currency": "{{currency}}", "method": "{{method}}"}}"#
            }
            Self::Welcome => {
                r#"{"type": "subscription.welcome", "timestamp": "{{occurred_at}}", "data": {"event_id": "{{event_id}}", "tenant_id": "{{tenant_id}}", "customer_id": "{{customer_id}}", "subscription_id": "{{subscription_id}}", "plan_id": "{{plan_id}}", "amount": "{{amount}}", "currency": "{{currency}}", "billing_interval": "{{billing_interval}}"}}"#
            }
            Self::CreditIssued => {
                r#"{"type": "credit.issued", "timestamp": "{{occurred_at}}", "data": {"event_id": "{{event_id}}", "tenant_id": "{{tenant_id}}", "customer_id": "{{customer_id}}", "credit_memo_id": "{{credit_memo_id}}", "credit_memo_number": "{{credit_memo_number}}", "invoice_id": "{{invoice_id}}", "amount": "{{amount}}", "currency": "{{currency}}"}}"#
            }
        }
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An endpoint's notification bodies: a JSON document per kind, with `{{placeholder}}`s inside
/// its string values (see [`NotificationKind::placeholders`]). A kind left out uses its
/// default template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationTemplates {
    /// Body of "invoice ready" (`invoice_finalized`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_ready: Option<String>,
    /// Body of "payment receipt" (`payment_captured`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_receipt: Option<String>,
    /// Body of "welcome" (`subscription_activated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<String>,
    /// Body of "credit issued" (`credit_memo_issued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_issued: Option<String>,
}

impl NotificationTemplates {
    /// The configured template of a kind, if any.
    pub fn get(&self, kind: NotificationKind) -> Option<&str> {
        match kind {
            NotificationKind::InvoiceReady => self.invoice_ready.as_deref(),
            NotificationKind::PaymentReceipt => self.payment_receipt.as_deref(),
            NotificationKind::Welcome => self.welcome.as_deref(),
            NotificationKind::CreditIssued => self.credit_issued.as_deref(),
        }
    }

    /// Whether no template is configured.
    pub fn is_empty(&self) -> bool {
        NotificationKind::ALL
            .into_iter()
            .all(|k| self.get(k).is_none())
    }
}

/// The `{{name}}` placeholders of a template, in order of appearance; an error names an
/// opening `{{` without its closing `}}` or a name that is not `[a-z0-9_]+`.
pub fn template_placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err("has a '{{' without its closing '}}'".to_owned());
        };
        let name = after[..end].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "placeholder {{{{{}}}}} is not a name of [a-z0-9_]",
                &after[..end]
            ));
        }
        names.push(name);
        rest = &after[end + 2..];
    }
    Ok(names)
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
    /// ERP route; none keeps the subledger only.
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
    /// Limits per ERP account (kind + account), shared by every tenant posting to it; an
    /// account without an entry gets its kind's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erp_accounts: Vec<ErpAccountConfig>,
    /// Tenants, in any order; ids must be unique.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}
