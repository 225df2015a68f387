//! Raw tenants file -> validated tenant map.
//!
//! Parsing (serde with `deny_unknown_fields`) already rejects unknown keys, missing fields, bad
//! tenant ids and unsupported currencies. What serde cannot express is checked here: unique ids,
//! non-empty account numbers, http(s) URLs without embedded credentials, unique webhook ids,
//! webhook templates that are JSON objects using only their kind's placeholders, positive rate
//! limits. Relative secret file paths are resolved against the tenants file's
//! directory here too, so a reader never depends on the process's working directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledgerflow_core::TenantId;

use sha2::{Digest, Sha256};

use crate::config::{
    AccountMapping, NotificationKind, SecretRef, TenantConfig, TenantsFile, template_placeholders,
};
use crate::erp::{AccountLimits, ErpAuth, ErpKind, ErpMode, ErpTarget};
use crate::error::TenantsError;

/// Validated tenants by id.
pub(crate) type TenantMap = HashMap<TenantId, Arc<TenantConfig>>;

impl TenantsFile {
    /// Parses tenants file text. `path` only labels errors (nothing is read from it and
    /// relative secret paths are left as they are); use [`crate::TenantRegistry::load`] to load
    /// a file.
    pub fn parse(text: &str, path: &Path) -> Result<Self, TenantsError> {
        toml::from_str(text).map_err(|source| {
            let location = source.span().map(|span| line_column(text, span.start));
            TenantsError::Parse {
                path: path.to_owned(),
                location,
                source: Box::new(source),
            }
        })
    }

    /// Renders the file as TOML (what [`TenantsFile::parse`] reads back).
    pub fn to_toml(&self) -> Result<String, TenantsError> {
        toml::to_string(self).map_err(TenantsError::Render)
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Validates every tenant and resolves relative secret files against `base_dir` (the tenants
/// file's directory; `None` leaves them relative to the working directory).
pub(crate) fn validate(
    file: TenantsFile,
    base_dir: Option<&Path>,
) -> Result<TenantMap, TenantsError> {
    let limits = account_limits(&file)?;
    let mut tenants = TenantMap::with_capacity(file.tenants.len());
    for mut tenant in file.tenants {
        validate_tenant(&tenant)?;
        if let Some(dir) = base_dir {
            resolve_secret_paths(&mut tenant, dir);
        }
        if let Some(erp) = &mut tenant.erp {
            let key = (erp.kind, erp.account.clone());
            erp.limits = Some(
                limits
                    .get(&key)
                    .copied()
                    .unwrap_or_else(|| AccountLimits::default_for(erp.kind)),
            );
            erp.config_version = config_version(erp, &tenant.accounts);
        }
        if tenants.contains_key(&tenant.tenant_id) {
            return Err(TenantsError::DuplicateTenant {
                tenant: tenant.tenant_id,
            });
        }
        tenants.insert(tenant.tenant_id.clone(), Arc::new(tenant));
    }
    Ok(tenants)
}

/// The `[[erp_accounts]]` limits by (kind, account); ids must be plain and unique, limits
/// positive.
fn account_limits(
    file: &TenantsFile,
) -> Result<HashMap<(ErpKind, String), AccountLimits>, TenantsError> {
    let mut out = HashMap::with_capacity(file.erp_accounts.len());
    for entry in &file.erp_accounts {
        let invalid = |field: &str, reason: &str| TenantsError::InvalidAccount {
            kind: entry.kind,
            account: entry.account.clone(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        check_account_id(&entry.account).map_err(|reason| invalid("account", &reason))?;
        if entry.concurrency == 0 {
            return Err(invalid("concurrency", "must be greater than 0"));
        }
        if entry.rate_per_sec == Some(0) {
            return Err(invalid(
                "rate_per_sec",
                "must be greater than 0 (leave it out for no limit)",
            ));
        }
        let limits = AccountLimits {
            concurrency: entry.concurrency,
            rate_per_sec: entry.rate_per_sec,
        };
        if out
            .insert((entry.kind, entry.account.clone()), limits)
            .is_some()
        {
            return Err(TenantsError::DuplicateAccount {
                kind: entry.kind,
                account: entry.account.clone(),
            });
        }
    }
    Ok(out)
}

/// A short, stable fingerprint of what a tenant's ERP documents are rendered from: the route
/// (with the account's limits) and the GL accounts. It changes exactly when one of them does,
/// whatever else in the file changes, and is the same in every process that loads the file.
fn config_version(erp: &ErpTarget, accounts: &AccountMapping) -> String {
    #[derive(serde::Serialize)]
    struct Rendered<'a> {
        erp: &'a ErpTarget,
        limits: Option<AccountLimits>,
        accounts: &'a AccountMapping,
    }
    let text = toml::to_string(&Rendered {
        erp,
        limits: erp.limits,
        accounts,
    })
    .unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cfg-{hex}")
}

/// ERP account ids become metric labels, path segments and row keys: keep them plain.
fn check_account_id(id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{id:?} must use only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn validate_erp(erp: &ErpTarget) -> Result<(), (String, String)> {
    let fail = |field: &str, reason: String| Err((format!("erp.{field}"), reason));
    let non_empty = |field: &str, value: &str| {
        if value.trim().is_empty() {
            Err((format!("erp.{field}"), "must not be empty".to_owned()))
        } else {
            Ok(())
        }
    };
    check_account_id(&erp.account).map_err(|r| ("erp.account".to_owned(), r))?;
    check_url(&erp.base_url).map_err(|r| ("erp.base_url".to_owned(), r))?;

    let allowed = ErpAuth::methods_for(erp.kind);
    if !allowed.contains(&erp.auth.method()) {
        return fail(
            "auth.method",
            format!(
                "{} is not available for {}; use {}",
                erp.auth.method(),
                erp.kind,
                allowed.join(" or ")
            ),
        );
    }
    match &erp.auth {
        ErpAuth::Oauth2ClientCredentials {
            token_url,
            client_id,
            scope,
            ..
        } => {
            check_url(token_url).map_err(|r| ("erp.auth.token_url".to_owned(), r))?;
            non_empty("auth.client_id", client_id)?;
            if let Some(scope) = scope {
                non_empty("auth.scope", scope)?;
            }
        }
        ErpAuth::NetsuiteM2m {
            client_id,
            certificate_id,
            token_url,
            ..
        } => {
            non_empty("auth.client_id", client_id)?;
            non_empty("auth.certificate_id", certificate_id)?;
            if let Some(url) = token_url {
                check_url(url).map_err(|r| ("erp.auth.token_url".to_owned(), r))?;
            }
        }
        ErpAuth::NetsuiteTba { .. } => {}
        ErpAuth::Basic { user, .. } => non_empty("auth.user", user)?,
    }
    for (key, secret) in erp.auth.secrets() {
        check_secret_ref(secret).map_err(|r| (format!("erp.auth.{key}"), r))?;
    }

    // Exactly the kind's own table of organisational keys.
    let tables = [
        (ErpKind::Netsuite, erp.netsuite.is_some()),
        (ErpKind::Dynamics365, erp.dynamics365.is_some()),
        (ErpKind::S4hana, erp.s4hana.is_some()),
        (ErpKind::OracleFusion, erp.oracle_fusion.is_some()),
    ];
    for (kind, present) in tables {
        if kind == erp.kind && !present {
            return fail(
                kind.as_str(),
                format!("is required when erp.kind = \"{kind}\""),
            );
        }
        if kind != erp.kind && present {
            return fail(
                kind.as_str(),
                format!("does not apply to erp.kind = \"{}\"", erp.kind),
            );
        }
    }
    let subledger = erp.mode == ErpMode::Subledger;
    if let Some(ns) = &erp.netsuite {
        non_empty("netsuite.subsidiary", &ns.subsidiary)?;
        match &ns.default_item {
            Some(item) => non_empty("netsuite.default_item", item)?,
            None if subledger => {
                return fail(
                    "netsuite.default_item",
                    "is required with mode = \"subledger\"".to_owned(),
                );
            }
            None => {}
        }
        for (account, item) in &ns.items {
            non_empty("netsuite.items", account)?;
            non_empty(&format!("netsuite.items.{account}"), item)?;
        }
    }
    if let Some(d) = &erp.dynamics365 {
        non_empty("dynamics365.data_area_id", &d.data_area_id)?;
        non_empty("dynamics365.journal_name", &d.journal_name)?;
        match &d.payment_journal_name {
            Some(name) => non_empty("dynamics365.payment_journal_name", name)?,
            None if subledger => {
                return fail(
                    "dynamics365.payment_journal_name",
                    "is required with mode = \"subledger\"".to_owned(),
                );
            }
            None => {}
        }
    }
    if let Some(s4) = &erp.s4hana {
        non_empty("s4hana.company_code", &s4.company_code)?;
        non_empty("s4hana.document_type", &s4.document_type)?;
    }
    if let Some(f) = &erp.oracle_fusion {
        non_empty("oracle_fusion.ledger", &f.ledger)?;
        non_empty("oracle_fusion.business_unit", &f.business_unit)?;
        non_empty("oracle_fusion.journal_source", &f.journal_source)?;
        non_empty("oracle_fusion.journal_category", &f.journal_category)?;
    }
    Ok(())
}

fn validate_tenant(tenant: &TenantConfig) -> Result<(), TenantsError> {
    let invalid = |field: &str, reason: String| TenantsError::Invalid {
        tenant: tenant.tenant_id.clone(),
        field: field.to_owned(),
        reason,
    };
    let non_empty = |field: &str, value: &str| {
        if value.trim().is_empty() {
            Err(invalid(field, "must not be empty".to_owned()))
        } else {
            Ok(())
        }
    };

    non_empty("legal_entity", &tenant.legal_entity)?;

    let accounts = &tenant.accounts;
    non_empty("accounts.receivable", &accounts.receivable)?;
    non_empty("accounts.revenue_default", &accounts.revenue_default)?;
    for (family, account) in &accounts.revenue_by_family {
        non_empty("accounts.revenue_by_family", family)?;
        non_empty(&format!("accounts.revenue_by_family.{family}"), account)?;
    }
    non_empty("accounts.tax_payable", &accounts.tax_payable)?;
    non_empty("accounts.cash_clearing", &accounts.cash_clearing)?;
    non_empty("accounts.payment_fees", &accounts.payment_fees)?;
    non_empty("accounts.unapplied_cash", &accounts.unapplied_cash)?;

    if let Some(erp) = &tenant.erp {
        validate_erp(erp).map_err(|(field, reason)| invalid(&field, reason))?;
    }

    let mut webhook_ids = HashSet::with_capacity(tenant.webhooks.len());
    for webhook in &tenant.webhooks {
        check_webhook_id(&webhook.id).map_err(|reason| invalid("webhooks.id", reason))?;
        if !webhook_ids.insert(webhook.id.as_str()) {
            return Err(TenantsError::DuplicateWebhook {
                tenant: tenant.tenant_id.clone(),
                id: webhook.id.clone(),
            });
        }
        let field = |name: &str| format!("webhooks[{}].{name}", webhook.id);
        check_url(&webhook.url).map_err(|reason| invalid(&field("url"), reason))?;
        check_secret_ref(&webhook.secret).map_err(|reason| invalid(&field("secret"), reason))?;
        for kind in NotificationKind::ALL {
            if let Some(template) = webhook.templates.get(kind) {
                check_template(kind, template)
                    .map_err(|reason| invalid(&field(&format!("templates.{kind}")), reason))?;
            }
        }
    }

    if tenant.rate_limit_per_sec == Some(0) {
        return Err(invalid(
            "rate_limit_per_sec",
            "must be greater than 0 (leave it out for no limit)".to_owned(),
        ));
    }
    Ok(())
}

/// An absolute http(s) URL with a host and no user info (credentials belong in a
/// [`SecretRef`], never in the tenants file).
fn check_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid url ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https url, got scheme {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not embed credentials (use a secret reference)".to_owned());
    }
    Ok(())
}

/// Endpoint ids become part of webhook ids and delivery-log keys: keep them plain.
fn check_webhook_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "{id:?} must use only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A template must look like a JSON object and use only the placeholders of its kind. Whether
/// it is valid JSON is checked when it is rendered (a failure there dead-letters the event
/// with reason `template_render`).
fn check_template(kind: NotificationKind, template: &str) -> Result<(), String> {
    let trimmed = template.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return Err("must be a JSON object".to_owned());
    }
    for name in template_placeholders(template)? {
        if !kind.has_placeholder(name) {
            return Err(format!(
                "uses the unknown placeholder {{{{{name}}}}}; {kind} knows {}",
                kind.placeholders().join(", ")
            ));
        }
    }
    Ok(())
}

fn check_secret_ref(secret: &SecretRef) -> Result<(), String> {
    match secret {
        SecretRef::Env { env } if env.trim().is_empty() => {
            Err("env must name an environment variable".to_owned())
        }
        SecretRef::File { file } if file.as_os_str().is_empty() => {
            Err("file must name a file".to_owned())
        }
        SecretRef::Env { .. } | SecretRef::File { .. } => Ok(()),
    }
}

fn resolve_secret_paths(tenant: &mut TenantConfig, dir: &Path) {
    let resolve = |secret: &mut SecretRef| {
        if let SecretRef::File { file } = secret
            && file.is_relative()
        {
            *file = dir.join(&*file);
        }
    };
    if let Some(erp) = &mut tenant.erp {
        for secret in erp.auth.secrets_mut() {
            resolve(secret);
        }
    }
    for webhook in &mut tenant.webhooks {
        resolve(&mut webhook.secret);
    }
}

/// The directory relative secret paths of the tenants file at `path` are resolved against,
/// made absolute (without resolving symlinks) so a later change of working directory cannot
/// redirect a secret read.
pub(crate) fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ledgerflow_core::{Currency, EventType};

    use super::*;
    use crate::fixtures::{FULL, minimal};

    fn tenant_id(raw: &str) -> TenantId {
        TenantId::parse(raw).unwrap()
    }

    fn parse(text: &str) -> Result<TenantsFile, TenantsError> {
        TenantsFile::parse(text, Path::new("tenants.toml"))
    }

    fn parse_and_validate(text: &str) -> Result<TenantMap, TenantsError> {
        validate(parse(text)?, None)
    }

    /// Replaces `from` (which must occur) in a minimal tenant and validates the result.
    fn validate_edited(from: &str, to: &str) -> Result<TenantMap, TenantsError> {
        let text = minimal("acme");
        assert!(text.contains(from), "fixture lacks {from:?}");
        parse_and_validate(&text.replacen(from, to, 1))
    }

    fn invalid_field(result: Result<TenantMap, TenantsError>) -> (String, String) {
        match result {
            Err(TenantsError::Invalid {
                tenant,
                field,
                reason,
            }) => {
                assert_eq!(tenant.as_str(), "acme");
                (field, reason)
            }
            other => panic!("expected an invalid-field error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_full_example() {
        let tenants = parse_and_validate(FULL).unwrap();
        assert_eq!(tenants.len(), 5);

        let acme = &tenants[&tenant_id("acme")];
        assert_eq!(acme.legal_entity, "Acme Corp.");
        assert_eq!(acme.functional_currency, Currency::parse("USD").unwrap());
        assert_eq!(acme.rate_limit_per_sec, Some(50));
        let erp = acme.erp.as_ref().unwrap();
        assert_eq!(erp.kind, ErpKind::Netsuite);
        assert_eq!(erp.account, "1234567");
        assert_eq!(erp.mode, ErpMode::Subledger);
        assert_eq!(
            erp.auth.secrets(),
            [(
                "private_key",
                &SecretRef::Env {
                    env: "ACME_NETSUITE_KEY".into()
                }
            )]
        );
        assert_eq!(erp.netsuite.as_ref().unwrap().items["4010"], "502");
        assert_eq!(
            erp.limits,
            Some(AccountLimits {
                concurrency: 3,
                rate_per_sec: Some(10)
            }),
            "limits come from [[erp_accounts]]"
        );
        assert!(
            erp.config_version.starts_with("cfg-"),
            "{}",
            erp.config_version
        );
        assert_eq!(acme.accounts.revenue_for("usage"), "4010");
        assert_eq!(
            acme.accounts.revenue_for("addons"),
            "4000",
            "falls back to the default"
        );
        assert_eq!(acme.webhooks.len(), 2);
        assert_eq!(acme.webhooks[0].id, "billing");
        assert_eq!(
            acme.webhooks[0].events,
            [EventType::InvoiceFinalized, EventType::PaymentCaptured]
        );
        assert!(
            acme.webhooks[1].events.is_empty(),
            "no filter means all events"
        );
        assert!(acme.webhooks[0].subscribes_to(EventType::PaymentCaptured));
        assert!(!acme.webhooks[0].subscribes_to(EventType::CreditMemoIssued));
        assert!(acme.webhooks[1].subscribes_to(EventType::CreditMemoIssued));
        assert!(
            acme.webhooks[0]
                .template(NotificationKind::InvoiceReady)
                .contains("Invoice {{invoice_number}} is ready")
        );
        assert!(acme.webhooks[1].templates.is_empty());
        assert_eq!(
            acme.webhooks[1].secret,
            SecretRef::Env {
                env: "ACME_AUDIT_WHSEC".into()
            }
        );

        let kinds: Vec<ErpKind> = ["acme", "globex", "initech", "umbrella-01"]
            .iter()
            .map(|id| tenants[&tenant_id(id)].erp.as_ref().unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                ErpKind::Netsuite,
                ErpKind::Dynamics365,
                ErpKind::S4hana,
                ErpKind::OracleFusion
            ]
        );
        let globex = tenants[&tenant_id("globex")].erp.clone().unwrap();
        assert_eq!(
            globex.limits,
            Some(AccountLimits::default_for(ErpKind::Dynamics365)),
            "an account without an entry gets its kind's defaults"
        );
        assert_eq!(globex.dynamics365.unwrap().data_area_id, "demf");
        let soylent = &tenants[&tenant_id("soylent")];
        assert!(soylent.erp.is_none());
        assert!(soylent.webhooks.is_empty());
        assert_eq!(soylent.rate_limit_per_sec, None);
        assert_eq!(soylent.functional_currency.exponent(), 3);
    }

    #[test]
    fn renders_toml_that_parses_back_to_the_same_tenants() {
        let file = parse(FULL).unwrap();
        let text = file.to_toml().unwrap();
        assert_eq!(parse(&text).unwrap(), file);
    }

    #[test]
    fn an_empty_file_has_no_tenants() {
        assert!(parse_and_validate("").unwrap().is_empty());
    }

    #[test]
    fn rejects_duplicate_tenant_ids_naming_the_duplicate() {
        let text = format!(
            "{}{}{}",
            minimal("acme"),
            minimal("globex"),
            minimal("globex")
        );
        let err = parse_and_validate(&text).unwrap_err();
        assert!(
            matches!(&err, TenantsError::DuplicateTenant { tenant } if tenant.as_str() == "globex"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "duplicate tenant id globex");
    }

    #[test]
    fn rejects_unknown_keys_with_path_and_line() {
        let text = minimal("acme").replace("legal_entity", "legal_entty");
        let err = TenantsFile::parse(&text, Path::new("/etc/ledgerflow/tenants.toml")).unwrap_err();
        let TenantsError::Parse { location, .. } = &err else {
            panic!("expected a parse error, got {err:?}");
        };
        assert_eq!(*location, Some((4, 1)), "the misspelt key is on line 4");
        let message = err.to_string();
        assert!(
            message.contains("/etc/ledgerflow/tenants.toml"),
            "{message}"
        );
        assert!(message.contains("line 4, column 1"), "{message}");
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("unknown field `legal_entty`"), "{source}");
        assert!(
            source.contains("line 4"),
            "toml's own rendering keeps the position: {source}"
        );
    }

    #[test]
    fn rejects_unknown_keys_in_nested_tables() {
        let err = validate_edited("payment_fees", "payment_fee").unwrap_err();
        assert!(matches!(err, TenantsError::Parse { .. }), "{err:?}");
        let text = FULL.replacen(
            "kind = \"netsuite\"",
            "kind = \"netsuite\"\nregion = \"eu\"",
            1,
        );
        assert!(matches!(parse(&text), Err(TenantsError::Parse { .. })));
        let text = minimal("acme").replace("[[tenants]]", "version = 2\n[[tenants]]");
        assert!(matches!(parse(&text), Err(TenantsError::Parse { .. })));
    }

    #[test]
    fn rejects_a_secret_ref_with_both_or_neither_source() {
        for secret in [r#"{ env = "A", file = "b" }"#, r#"{ path = "b" }"#, "{}"] {
            let text = FULL.replacen(r#"{ env = "ACME_NETSUITE_KEY" }"#, secret, 1);
            let result = parse(&text);
            assert!(
                matches!(result, Err(TenantsError::Parse { .. })),
                "{secret}: {result:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_ids_currencies_and_kinds_at_parse_time() {
        for (from, to) in [
            (r#"tenant_id = "acme""#, r#"tenant_id = "Acme Corp""#),
            (
                r#"functional_currency = "USD""#,
                r#"functional_currency = "usd""#,
            ),
        ] {
            let result = validate_edited(from, to);
            assert!(
                matches!(result, Err(TenantsError::Parse { .. })),
                "{to}: {result:?}"
            );
        }
        let text = FULL.replacen(r#"kind = "netsuite""#, r#"kind = "quickbooks""#, 1);
        assert!(matches!(parse(&text), Err(TenantsError::Parse { .. })));
    }

    #[test]
    fn rejects_empty_account_numbers() {
        for (account, number) in [
            ("receivable", "1200"),
            ("revenue_default", "4000"),
            ("tax_payable", "2200"),
            ("cash_clearing", "1010"),
            ("payment_fees", "6150"),
            ("unapplied_cash", "2400"),
        ] {
            for blank in ["", " "] {
                let (field, reason) = invalid_field(validate_edited(
                    &format!("{account} = \"{number}\""),
                    &format!("{account} = \"{blank}\""),
                ));
                assert_eq!(field, format!("accounts.{account}"));
                assert_eq!(reason, "must not be empty");
            }
        }
    }

    #[test]
    fn rejects_empty_revenue_accounts_by_family() {
        let (field, reason) = invalid_field(validate_edited(
            "revenue_default = \"4000\"",
            "revenue_default = \"4000\", revenue_by_family = { usage = \"\" }",
        ));
        assert_eq!(field, "accounts.revenue_by_family.usage");
        assert_eq!(reason, "must not be empty");
        let (field, _) = invalid_field(validate_edited(
            "revenue_default = \"4000\"",
            "revenue_default = \"4000\", revenue_by_family = { \"\" = \"4010\" }",
        ));
        assert_eq!(field, "accounts.revenue_by_family");
    }

    /// A minimal tenant with the ERP table `erp` (TOML inline table body).
    fn with_erp(erp: &str) -> Result<TenantMap, TenantsError> {
        validate_edited("accounts =", &format!("erp = {{ {erp} }}\naccounts ="))
    }

    const NETSUITE: &str = "kind = \"netsuite\", account = \"TSTDRV1\", \
        base_url = \"https://erp.example\", \
        auth = { method = \"netsuite_tba\", consumer_key = { env = \"CK\" }, \
        consumer_secret = { env = \"CS\" }, token_id = { env = \"TI\" }, \
        token_secret = { file = \"ts\" } }, netsuite = { subsidiary = \"1\" }";

    #[test]
    fn accepts_http_and_https_erp_base_urls_only() {
        let with_url = |url: &str| with_erp(&NETSUITE.replace("https://erp.example", url));
        assert!(with_url("https://erp.example/api").is_ok());
        assert!(with_url("http://127.0.0.1:9000/netsuite/acme").is_ok());
        for (url, expected) in [
            ("ftp://erp.example/api", "must be an http or https url"),
            ("erp.example/api", "is not a valid url"),
            ("", "is not a valid url"),
            (
                "https://user:pw@erp.example/api",
                "must not embed credentials",
            ),
        ] {
            let (field, reason) = invalid_field(with_url(url));
            assert_eq!(field, "erp.base_url");
            assert!(reason.starts_with(expected), "{url:?}: {reason}");
        }
    }

    #[test]
    fn erp_routes_are_validated_key_by_key() {
        assert!(with_erp(NETSUITE).is_ok());
        let cases = [
            (
                ("account = \"TSTDRV1\"", "account = \"a/b\""),
                "erp.account",
                "must use only",
            ),
            (
                ("account = \"TSTDRV1\"", "account = \"\""),
                "erp.account",
                "must not be empty",
            ),
            (
                ("token_id = { env = \"TI\" }", "token_id = { env = \"\" }"),
                "erp.auth.token_id",
                "env must name",
            ),
            (
                (
                    "netsuite = { subsidiary = \"1\" }",
                    "netsuite = { subsidiary = \" \" }",
                ),
                "erp.netsuite.subsidiary",
                "must not be empty",
            ),
            (
                (
                    "netsuite = { subsidiary = \"1\" }",
                    "mode = \"subledger\", netsuite = { subsidiary = \"1\" }",
                ),
                "erp.netsuite.default_item",
                "is required with mode = \"subledger\"",
            ),
            (
                (
                    "netsuite = { subsidiary = \"1\" }",
                    "s4hana = { company_code = \"1\", document_type = \"SA\" }",
                ),
                "erp.netsuite",
                "is required when erp.kind = \"netsuite\"",
            ),
            (
                (
                    "netsuite = { subsidiary = \"1\" }",
                    "netsuite = { subsidiary = \"1\" }, dynamics365 = { data_area_id = \"x\", journal_name = \"y\" }",
                ),
                "erp.dynamics365",
                "does not apply to erp.kind = \"netsuite\"",
            ),
        ];
        for ((from, to), field, reason) in cases {
            assert!(NETSUITE.contains(from), "{from}");
            let (got_field, got_reason) = invalid_field(with_erp(&NETSUITE.replacen(from, to, 1)));
            assert_eq!(got_field, field, "{to}");
            assert!(got_reason.contains(reason), "{to}: {got_reason}");
        }
        // An auth method the ERP does not have.
        let d365 = "kind = \"dynamics365\", account = \"env1\", base_url = \"https://e.example\", \
            auth = { method = \"basic\", user = \"u\", password = { env = \"P\" } }, \
            dynamics365 = { data_area_id = \"usmf\", journal_name = \"GenJrn\" }";
        let (field, reason) = invalid_field(with_erp(d365));
        assert_eq!(field, "erp.auth.method");
        assert_eq!(
            reason,
            "basic is not available for dynamics365; use oauth2_client_credentials"
        );
        let d365 = d365.replace(
            "method = \"basic\", user = \"u\", password = { env = \"P\" }",
            "method = \"oauth2_client_credentials\", token_url = \"login\", client_id = \"c\", \
             client_secret = { env = \"S\" }",
        );
        let (field, reason) = invalid_field(with_erp(&d365));
        assert_eq!(field, "erp.auth.token_url");
        assert!(reason.starts_with("is not a valid url"), "{reason}");
        // A secret written into the file instead of a reference is refused by the parser.
        let inline = NETSUITE.replace(
            "token_secret = { file = \"ts\" }",
            "token_secret = \"s3cr3t\"",
        );
        assert!(matches!(with_erp(&inline), Err(TenantsError::Parse { .. })));
        let unknown = NETSUITE.replace(
            "method = \"netsuite_tba\"",
            "method = \"netsuite_tba\", password = { env = \"X\" }",
        );
        assert!(matches!(
            with_erp(&unknown),
            Err(TenantsError::Parse { .. })
        ));
    }

    #[test]
    fn erp_accounts_are_validated_and_shared_by_their_tenants() {
        let account = |concurrency: &str| {
            format!(
                "[[erp_accounts]]\nkind = \"netsuite\"\naccount = \"TSTDRV1\"\nconcurrency = {concurrency}\n"
            )
        };
        let tenant = |id: &str| {
            minimal(id).replace("accounts =", &format!("erp = {{ {NETSUITE} }}\naccounts ="))
        };
        let text = format!("{}{}{}", account("2"), tenant("a"), tenant("b"));
        let tenants = parse_and_validate(&text).unwrap();
        for id in ["a", "b"] {
            let erp = tenants[&tenant_id(id)].erp.clone().unwrap();
            assert_eq!(erp.account_limits().concurrency, 2, "{id}");
        }
        let err = parse_and_validate(&format!("{}{}", account("0"), tenant("a"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "erp account netsuite/TSTDRV1: concurrency must be greater than 0"
        );
        let err = parse_and_validate(&format!("{}{}", account("2"), account("3"))).unwrap_err();
        assert_eq!(err.to_string(), "duplicate erp account netsuite/TSTDRV1");
        let bad_rate = account("2") + "rate_per_sec = 0\n";
        let err = parse_and_validate(&bad_rate).unwrap_err();
        assert!(
            err.to_string()
                .contains("rate_per_sec must be greater than 0"),
            "{err}"
        );
        let typo = account("2") + "concurency = 1\n";
        assert!(matches!(
            parse_and_validate(&typo),
            Err(TenantsError::Parse { .. })
        ));
    }

    #[test]
    fn the_config_version_follows_the_route_and_accounts_only() {
        let version = |text: &str| {
            parse_and_validate(text).unwrap()[&tenant_id("acme")]
                .erp
                .clone()
                .unwrap()
                .config_version
        };
        let base = FULL.to_owned();
        let v = version(&base);
        assert_eq!(v, version(&base), "stable across loads");
        assert_eq!(v.len(), "cfg-".len() + 16);
        // Webhooks and other tenants do not change it ...
        assert_eq!(v, version(&base.replace("id = \"audit\"", "id = \"ops\"")));
        assert_eq!(v, version(&base.replace("demf", "usmf")));
        // ... the route, the account limits and the GL accounts do.
        assert_ne!(
            v,
            version(&base.replace("subsidiary = \"1\"", "subsidiary = \"2\""))
        );
        assert_ne!(
            v,
            version(&base.replace("concurrency = 3", "concurrency = 4"))
        );
        assert_ne!(
            v,
            version(&base.replacen("receivable = \"1200\"", "receivable = \"1201\"", 1))
        );
    }

    fn with_webhooks(webhooks: &[(&str, &str)]) -> Result<TenantMap, TenantsError> {
        let mut text = minimal("acme");
        for (id, url) in webhooks {
            text.push_str(&format!(
                "[[tenants.webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nsecret = {{ file = \"w\" }}\n"
            ));
        }
        parse_and_validate(&text)
    }

    #[test]
    fn rejects_duplicate_webhook_ids_within_a_tenant() {
        assert!(with_webhooks(&[("a", "https://x.example"), ("b", "https://x.example")]).is_ok());
        let err =
            with_webhooks(&[("a", "https://x.example"), ("a", "https://y.example")]).unwrap_err();
        assert!(
            matches!(&err, TenantsError::DuplicateWebhook { tenant, id }
                if tenant.as_str() == "acme" && id == "a"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "tenant acme: duplicate webhook endpoint id \"a\""
        );
        // The same endpoint id under two tenants is fine.
        let text = FULL.replace("id = \"audit\"", "id = \"ops\"");
        assert!(parse_and_validate(&text).is_ok());
    }

    #[test]
    fn rejects_bad_webhook_urls_and_ids() {
        let (field, reason) = invalid_field(with_webhooks(&[("ops", "mailto:ops@acme.example")]));
        assert_eq!(field, "webhooks[ops].url");
        assert!(
            reason.starts_with("must be an http or https url"),
            "{reason}"
        );
        let (field, _) = invalid_field(with_webhooks(&[("ops", "not a url")]));
        assert_eq!(field, "webhooks[ops].url");
        let (field, _) = invalid_field(with_webhooks(&[("", "https://x.example")]));
        assert_eq!(field, "webhooks.id");
        let (field, _) = invalid_field(with_webhooks(&[("a b", "https://x.example")]));
        assert_eq!(field, "webhooks.id");
    }

    fn with_template(key: &str, template: &str) -> Result<TenantMap, TenantsError> {
        let mut text = minimal("acme");
        text.push_str(&format!(
            "[[tenants.webhooks]]\nid = \"ops\"\nurl = \"https://x.example\"\n\
             secret = {{ file = \"w\" }}\ntemplates = {{ {key} = '{template}' }}\n"
        ));
        parse_and_validate(&text)
    }

    #[test]
    fn accepts_templates_with_their_kinds_placeholders() {
        let tenants = with_template(
            "invoice_ready",
            r#"{"text": "Invoice {{invoice_number}}: {{ amount }} {{currency}}"}"#,
        )
        .unwrap();
        let webhook = &tenants[&tenant_id("acme")].webhooks[0];
        assert_eq!(
            webhook.template(NotificationKind::InvoiceReady),
            r#"{"text": "Invoice {{invoice_number}}: {{ amount }} {{currency}}"}"#
        );
        assert_eq!(
            webhook.template(NotificationKind::Welcome),
            NotificationKind::Welcome.default_template(),
            "a kind without a template uses the default"
        );
    }

    #[test]
    fn rejects_templates_with_unknown_placeholders_or_bad_shape() {
        let (field, reason) = invalid_field(with_template(
            "welcome",
            r#"{"text": "{{invoice_number}}"}"#,
        ));
        assert_eq!(field, "webhooks[ops].templates.welcome");
        assert!(
            reason.starts_with("uses the unknown placeholder {{invoice_number}}; welcome knows"),
            "{reason}"
        );
        let (_, reason) = invalid_field(with_template("credit_issued", r#"{"a": "{{amount"}"#));
        assert!(reason.contains("without its closing"), "{reason}");
        let (_, reason) = invalid_field(with_template("payment_receipt", r#"{"a": "{{A-B}}"}"#));
        assert!(reason.contains("is not a name"), "{reason}");
        let (_, reason) = invalid_field(with_template("payment_receipt", "amount {{amount}}"));
        assert_eq!(reason, "must be a JSON object");
        // A misspelt kind is a parse error (deny_unknown_fields).
        assert!(matches!(
            with_template("invoice_readdy", "{}"),
            Err(TenantsError::Parse { .. })
        ));
    }

    #[test]
    fn every_default_template_uses_only_its_kinds_placeholders() {
        for kind in NotificationKind::ALL {
            assert_eq!(
                check_template(kind, kind.default_template()),
                Ok(()),
                "{kind}"
            );
            assert_eq!(NotificationKind::for_event(kind.event_type()), Some(kind));
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            NotificationKind::for_event(EventType::UsageAggregated),
            None
        );
    }

    #[test]
    fn rejects_a_zero_rate_limit() {
        let set = |limit: &str| {
            validate_edited(
                "accounts =",
                &format!("rate_limit_per_sec = {limit}\naccounts ="),
            )
        };
        assert_eq!(
            set("1").unwrap()[&tenant_id("acme")].rate_limit_per_sec,
            Some(1)
        );
        let (field, reason) = invalid_field(set("0"));
        assert_eq!(field, "rate_limit_per_sec");
        assert!(reason.starts_with("must be greater than 0"), "{reason}");
        assert!(matches!(set("-1"), Err(TenantsError::Parse { .. })));
    }

    #[test]
    fn resolves_relative_secret_files_against_the_tenants_directory() {
        let file = parse(FULL).unwrap();
        let tenants = validate(file.clone(), Some(Path::new("/etc/ledgerflow"))).unwrap();
        let acme = &tenants[&tenant_id("acme")];
        assert_eq!(
            acme.webhooks[0].secret,
            SecretRef::File {
                file: "/etc/ledgerflow/secrets/acme-billing.whsec".into()
            }
        );
        let secret_of = |tenants: &TenantMap, id: &str| {
            tenants[&tenant_id(id)].erp.as_ref().unwrap().auth.secrets()[0]
                .1
                .clone()
        };
        assert_eq!(
            secret_of(&tenants, "umbrella-01"),
            SecretRef::File {
                file: "/etc/ledgerflow/umbrella.token".into()
            }
        );
        // Absolute paths and env references are left alone.
        assert_eq!(
            secret_of(&tenants, "globex"),
            SecretRef::File {
                file: "/run/secrets/globex-d365".into()
            }
        );
        assert_eq!(acme.webhooks[1].secret, file.tenants[0].webhooks[1].secret);
        // Without a base directory nothing is rewritten.
        let unresolved = validate(file, None).unwrap();
        assert_eq!(
            secret_of(&unresolved, "umbrella-01"),
            SecretRef::File {
                file: "umbrella.token".into()
            }
        );
    }

    #[test]
    fn base_dir_is_absolute() {
        assert_eq!(
            base_dir(Path::new("/etc/lf/tenants.toml")),
            Path::new("/etc/lf")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(base_dir(Path::new("conf/tenants.toml")), cwd.join("conf"));
        assert!(base_dir(Path::new("tenants.toml")).is_absolute());
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        assert_eq!(line_column("abc", 0), (1, 1));
        assert_eq!(line_column("a\nbc", 3), (2, 2));
        assert_eq!(
            line_column("é\nx", 1),
            (1, 1),
            "inside a character rounds down"
        );
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn rejects_empty_legal_entity() {
        let (field, reason) = invalid_field(validate_edited(
            r#"legal_entity = "acme Inc.""#,
            r#"legal_entity = " ""#,
        ));
        assert_eq!(field, "legal_entity");
        assert_eq!(reason, "must not be empty");
    }
}
