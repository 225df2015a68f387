//! Test fixtures shared by the unit tests of this crate.

use std::path::Path;

/// Five tenants: every ERP kind and auth method, both secret sources, account limits,
/// webhooks with and without an event filter, revenue by family, a rate limit, and a tenant
/// without ERP.
pub(crate) const FULL: &str = r#"
[[erp_accounts]]
kind = "netsuite"
account = "1234567"
concurrency = 3
rate_per_sec = 10

[[tenants]]
tenant_id = "acme"
legal_entity = "Acme Corp."
functional_currency = "USD"
rate_limit_per_sec = 50

[tenants.erp]
kind = "netsuite"
account = "1234567"
base_url = "https://1234567.suitetalk.api.netsuite.com"
mode = "subledger"
auth = { method = "netsuite_m2m", client_id = "acme-client", certificate_id = "cert-1", private_key = { env = "ACME_NETSUITE_KEY" } }
netsuite = { subsidiary = "1", default_item = "501", items = { "4010" = "502" } }

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
erp = { kind = "dynamics365", account = "globex-prod", base_url = "https://globex.operations.dynamics.com", auth = { method = "oauth2_client_credentials", token_url = "https://login.microsoftonline.com/globex.example/oauth2/v2.0/token", client_id = "app-1", client_secret = { file = "/run/secrets/globex-d365" }, scope = "https://globex.operations.dynamics.com/.default" }, dynamics365 = { data_area_id = "demf", journal_name = "GenJrn" } }
accounts = { receivable = "140000", revenue_default = "800000", tax_payable = "176000", cash_clearing = "120000", payment_fees = "675000", unapplied_cash = "141000" }

[[tenants]]
tenant_id = "initech"
legal_entity = "Initech K.K."
functional_currency = "JPY"
erp = { kind = "s4hana", account = "S4H", base_url = "https://my300000-api.s4hana.cloud.sap", auth = { method = "basic", user = "COMM_USER", password = { env = "INITECH_S4_PASSWORD" } }, s4hana = { company_code = "1010", document_type = "SA" } }
accounts = { receivable = "12100000", revenue_default = "41000000", tax_payable = "22000000", cash_clearing = "11000000", payment_fees = "65000000", unapplied_cash = "12900000" }

[[tenants]]
tenant_id = "umbrella-01"
legal_entity = "Umbrella Ltd"
functional_currency = "GBP"
erp = { kind = "oracle_fusion", account = "fa-umbrella", base_url = "https://fa-umbrella.fa.ocs.oraclecloud.com", auth = { method = "basic", user = "integration", password = { file = "umbrella.token" } }, oracle_fusion = { ledger = "UK Primary", business_unit = "UK BU", journal_source = "ledgerflow", journal_category = "Sales" } }
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
