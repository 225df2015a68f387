//! Test fixtures shared by the unit tests of this crate.

use std::path::Path;

/// Four tenants: every ERP kind, both secret sources, webhooks with and without an event
/// filter, revenue by family, a rate limit, and a tenant without ERP.
pub(crate) const FULL: &str = r#"
[[tenants]]
tenant_id = "acme"
legal_entity = "Acme Corp."
functional_currency = "USD"
rate_limit_per_sec = 50

[tenants.erp]
kind = "netsuite"
endpoint = "https://1234567.suitetalk.api.netsuite.com/services/rest/record/v1"
credential = { env = "ACME_NETSUITE_TOKEN" }

[tenants.accounts]
receivable = "1200"
revenue_default = "4000"
revenue_by_family = { platform = "4000", usage = "4010", support = "4020" }
tax_payable = "2200"
cash_clearing = "1010"
payment_fees = "6150"
unapplied_cash = "2400"

[[tenants.webhooks]]
id = "billing"
url = "https://hooks.acme.example/ledgerflow"
secret = { file = "secrets/acme-billing.whsec" }
events = ["invoice_finalized", "payment_captured"]
templates = { invoice_ready = '{"text": "Invoice {{invoice_number}} is ready: {{amount}} {{currency}}", "invoice": "{{invoice_id}}"}' }

[[tenants.webhooks]]
id = "audit"
url = "http://10.0.0.7:8080/in"
secret = { env = "ACME_AUDIT_WHSEC" }

[[tenants]]
tenant_id = "globex"
legal_entity = "Globex GmbH"
functional_currency = "EUR"
erp = { kind = "dynamics365", endpoint = "https://globex.operations.dynamics.com/data", credential = { file = "/run/secrets/globex-d365" } }
accounts = { receivable = "140000", revenue_default = "800000", tax_payable = "176000", cash_clearing = "120000", payment_fees = "675000", unapplied_cash = "141000" }

[[tenants]]
tenant_id = "initech"
legal_entity = "Initech K.K."
functional_currency = "JPY"
erp = { kind = "s4hana", endpoint = "https://my300000-api.s4hana.cloud.sap/sap/opu/odata", credential = { env = "INITECH_S4_TOKEN" } }
accounts = { receivable = "12100000", revenue_default = "41000000", tax_payable = "22000000", cash_clearing = "11000000", payment_fees = "65000000", unapplied_cash = "12900000" }

[[tenants]]
tenant_id = "umbrella-01"
legal_entity = "Umbrella Ltd"
functional_currency = "GBP"
erp = { kind = "oracle_fusion", endpoint = "https://fa-umbrella.fa.ocs.oraclecloud.com/fscmRestApi", credential = { file = "umbrella.token" } }
accounts = { receivable = "1100", revenue_default = "4100", tax_payable = "2100", cash_clearing = "1000", payment_fees = "6100", unapplied_cash = "2110" }

[[tenants]]
tenant_id = "soylent"
legal_entity = "Soylent Ltd"
functional_currency = "KWD"
accounts = { receivable = "1", revenue_default = "4", tax_payable = "2", cash_clearing = "10", payment_fees = "6", unapplied_cash = "24" }
"#;

/// One minimal valid tenant, as a TOML `[[tenants]]` table.
pub(crate) fn minimal(id: &str) -> String {
    format!(
        r#"
[[tenants]]
tenant_id = "{id}"
legal_entity = "{id} Inc."
functional_currency = "USD"
accounts = {{ receivable = "1200", revenue_default = "4000", tax_payable = "2200", cash_clearing = "1010", payment_fees = "6150", unapplied_cash = "2400" }}
"#
    )
}

/// Writes `text` to `path`, replacing it atomically (as editors and ConfigMap updates do), so
/// a concurrent reader never sees a half-written file.
pub(crate) fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp tenants file");
    std::fs::rename(&tmp, path).expect("rename tenants file");
}
