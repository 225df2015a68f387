//! A tenant's ERP route: which ERP account its documents go to, how ledgerflow authenticates
//! there, what it posts (`mode`) and the organisational keys of the ERP (`netsuite`,
//! `dynamics365`, `s4hana`, `oracle_fusion` tables), plus the top-level `[[erp_accounts]]`
//! table that sets the limits of an ERP account once for every tenant posting to it.
//!
//! Secrets are references ([`SecretRef`]) read by the dispatcher when it authenticates; the
//! identifiers next to them (client ids, certificate ids, user names) are not secret and may
//! appear in logs and rows.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::SecretRef;

/// Which ERP a tenant posts to; each kind has its own adapter in `ledgerflow-erp-receivables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErpKind {
    /// Oracle NetSuite (SuiteTalk REST record API).
    Netsuite,
    /// Microsoft Dynamics 365 Finance & Operations (OData v4).
    Dynamics365,
    /// SAP S/4HANA (journal entry SOAP services).
    S4hana,
    /// Oracle Fusion Cloud Financials (erpintegrations, FBDI).
    OracleFusion,
}

impl ErpKind {
    /// Every kind.
    pub const ALL: [ErpKind; 4] = [
        Self::Netsuite,
        Self::Dynamics365,
        Self::S4hana,
        Self::OracleFusion,
    ];

    /// Stable name (the `kind` value in the tenants file, a metric label, an outbox column).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Netsuite => "netsuite",
            Self::Dynamics365 => "dynamics365",
            Self::S4hana => "s4hana",
            Self::OracleFusion => "oracle_fusion",
        }
    }

    /// Parses a stable name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Requests in flight per account when `[[erp_accounts]]` does not say. NetSuite's limit
    /// is account-wide and depends on the service tier (5 is a small account's, and the
    /// simulator's default); D365's documented limits are far higher, but a journal integration
    /// gains little from more; S/4HANA and Fusion publish no per-request limit, so stay modest.
    pub fn default_concurrency(self) -> u32 {
        match self {
            Self::Netsuite => 5,
            Self::Dynamics365 => 8,
            Self::S4hana => 4,
            Self::OracleFusion => 2,
        }
    }
}

impl fmt::Display for ErpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tenant posts to its ERP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErpMode {
    /// Every journal as a general-ledger journal entry (the default).
    #[default]
    Journal,
    /// AR documents where the ERP has them (invoice, customer payment applied to its invoice,
    /// credit memo); what the ERP has no document for stays a journal.
    Subledger,
}

impl ErpMode {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::Subledger => "subledger",
        }
    }
}

/// The JWS algorithm of a NetSuite M2M client assertion.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// ECDSA P-256 with SHA-256 (the private key is a PKCS#8 P-256 key).
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PSS with SHA-256 (the private key is a PKCS#8 RSA key of at least 2048 bits).
    #[serde(rename = "PS256")]
    Ps256,
}

impl JwtAlgorithm {
    /// The JWS `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Ps256 => "PS256",
        }
    }
}

/// How ledgerflow authenticates to a tenant's ERP. Secrets are references; the rest is not
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum ErpAuth {
    /// OAuth 2.0 client credentials with a client secret (Microsoft Entra ID for Dynamics 365,
    /// Oracle IAM for Fusion). Tokens are cached per (token URL, client id) and shared by every
    /// tenant using that client.
    Oauth2ClientCredentials {
        /// Token endpoint, e.g. `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
        token_url: String,
        /// Client (application) id.
        client_id: String,
        /// Client secret.
        client_secret: SecretRef,
        /// Scope; Entra ID needs `{environment url}/.default`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// NetSuite OAuth 2.0 client credentials (machine to machine): a JWT client assertion
    /// signed with the private key of the certificate uploaded to the integration's mapping.
    NetsuiteM2m {
        /// The integration record's client id (the JWT `iss`).
        client_id: String,
        /// The certificate id of the mapping (the JWT header `kid`).
        certificate_id: String,
        /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
        private_key: SecretRef,
        /// `ES256` (default) or `PS256`.
        #[serde(default)]
        algorithm: JwtAlgorithm,
        /// Token endpoint; default `{base_url}/services/rest/auth/oauth2/v1/token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_url: Option<String>,
    },
    /// NetSuite token-based authentication (OAuth 1.0a, HMAC-SHA256, realm = the account). No
    /// new TBA integrations from NetSuite 2027.1: prefer `netsuite_m2m`.
    NetsuiteTba {
        /// Integration record consumer key.
        consumer_key: SecretRef,
        /// Integration record consumer secret.
        consumer_secret: SecretRef,
        /// Access token id.
        token_id: SecretRef,
        /// Access token secret.
        token_secret: SecretRef,
    },
    /// HTTP basic (S/4HANA communication user, Fusion integration user).
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: SecretRef,
    },
}

impl ErpAuth {
    /// The `method` value.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
            Self::NetsuiteM2m { .. } => "netsuite_m2m",
            Self::NetsuiteTba { .. } => "netsuite_tba",
            Self::Basic { .. } => "basic",
        }
    }

    /// Every secret reference, with the key that holds it.
    pub fn secrets(&self) -> Vec<(&'static str, &SecretRef)> {
        match self {
            Self::Oauth2ClientCredentials { client_secret, .. } => {
                vec![("client_secret", client_secret)]
            }
            Self::NetsuiteM2m { private_key, .. } => vec![("private_key", private_key)],
            Self::NetsuiteTba {
                consumer_key,
                consumer_secret,
                token_id,
                token_secret,
            } => vec![
                ("consumer_key", consumer_key),
                ("consumer_secret", consumer_secret),
                ("token_id", token_id),
                ("token_secret", token_secret),
            ],
            Self::Basic { password, .. } => vec![("password", password)],
        }
    }

    pub(crate) fn secrets_mut(&mut self) -> Vec<&mut SecretRef> {
        match self {
            Self::Oauth2ClientCredentials { client_secret, .. } => vec![client_secret],
            Self::NetsuiteM2m { private_key, .. } => vec![private_key],
            Self::NetsuiteTba {
                consumer_key,
                consumer_secret,
                token_id,
                token_secret,
            } => vec![consumer_key, consumer_secret, token_id, token_secret],
            Self::Basic { password, .. } => vec![password],
        }
    }

    /// The methods an ERP kind accepts.
    pub fn methods_for(kind: ErpKind) -> &'static [&'static str] {
        match kind {
            ErpKind::Netsuite => &["netsuite_m2m", "netsuite_tba"],
            ErpKind::Dynamics365 => &["oauth2_client_credentials"],
            ErpKind::S4hana | ErpKind::OracleFusion => &["basic", "oauth2_client_credentials"],
        }
    }
}

/// NetSuite organisational keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetsuiteMapping {
    /// Internal id of the subsidiary (OneWorld accounts).
    pub subsidiary: String,
    /// Subledger mode: the item of invoice and credit memo lines whose revenue account has no
    /// entry in `items`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_item: Option<String>,
    /// Subledger mode: item internal id per revenue (or tax) account of the tenant's mapping.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, String>,
}

/// Dynamics 365 Finance & Operations organisational keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dynamics365Mapping {
    /// Company (`dataAreaId`), e.g. `usmf`.
    pub data_area_id: String,
    /// General journal name (`JournalName` of LedgerJournalHeaders), e.g. `GenJrn`.
    pub journal_name: String,
    /// Subledger mode: the customer payment journal name (CustomerPaymentJournalHeaders),
    /// e.g. `CustPay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_journal_name: Option<String>,
}

/// SAP S/4HANA organisational keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S4hanaMapping {
    /// Company code, e.g. `1010`.
    pub company_code: String,
    /// Accounting document type, e.g. `SA`.
    pub document_type: String,
}

/// Oracle Fusion organisational keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OracleFusionMapping {
    /// Ledger (id or name as the journal import expects it).
    pub ledger: String,
    /// Business unit (AutoInvoice).
    pub business_unit: String,
    /// Journal source (`USER_JE_SOURCE_NAME`).
    pub journal_source: String,
    /// Journal category (`USER_JE_CATEGORY_NAME`).
    pub journal_category: String,
}

/// Limits of one ERP account, shared by every tenant posting to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountLimits {
    /// Requests in flight at once on the account.
    pub concurrency: u32,
    /// Requests per second on the account; none = no rate limit.
    pub rate_per_sec: Option<u32>,
}

impl AccountLimits {
    /// The limits of an account that has no `[[erp_accounts]]` entry.
    pub fn default_for(kind: ErpKind) -> Self {
        Self {
            concurrency: kind.default_concurrency(),
            rate_per_sec: None,
        }
    }
}

/// One `[[erp_accounts]]` entry: the limits of an ERP account, set once for all its tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpAccountConfig {
    /// ERP kind.
    pub kind: ErpKind,
    /// Account id (NetSuite account, D365 environment, S/4 system, Fusion pod).
    pub account: String,
    /// Requests in flight at once on this account, all tenants together. NetSuite rejects
    /// requests over the account's governance limit, so set it at or below that limit minus
    /// what other integrations use.
    pub concurrency: u32,
    /// Requests per second on this account, all tenants together; leave it out for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<u32>,
}

/// A tenant's ERP route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErpTarget {
    /// Which ERP.
    pub kind: ErpKind,
    /// The ERP account id; tenants with the same kind and account share its limits.
    pub account: String,
    /// Base URL of the account's API, without the service path (NetSuite
    /// `https://{account}.suitetalk.api.netsuite.com`, D365 `https://{env}.operations.dynamics.com`).
    pub base_url: String,
    /// `journal` (default) or `subledger`.
    #[serde(default)]
    pub mode: ErpMode,
    /// Authentication.
    pub auth: ErpAuth,
    /// NetSuite keys (required when kind = netsuite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netsuite: Option<NetsuiteMapping>,
    /// Dynamics 365 keys (required when kind = dynamics365).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamics365: Option<Dynamics365Mapping>,
    /// S/4HANA keys (required when kind = s4hana).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s4hana: Option<S4hanaMapping>,
    /// Oracle Fusion keys (required when kind = oracle_fusion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oracle_fusion: Option<OracleFusionMapping>,
    /// The account's limits, filled in from `[[erp_accounts]]` (or the kind's defaults) when
    /// the file is validated; not a key of the tenant's table.
    #[serde(skip)]
    pub limits: Option<AccountLimits>,
    /// A fingerprint of everything a rendered document depends on (this route, the limits and
    /// the tenant's GL accounts), filled in when the file is validated. Stored with every
    /// posting, so an operator can tell which configuration a document was rendered with.
    #[serde(skip)]
    pub config_version: String,
}

impl ErpTarget {
    /// The limits in force (the kind's defaults before validation filled them in).
    pub fn account_limits(&self) -> AccountLimits {
        self.limits
            .unwrap_or_else(|| AccountLimits::default_for(self.kind))
    }
}
