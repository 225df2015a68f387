//! Rendering a notification body from an endpoint's JSON template. Pure: no I/O, no clock.
//!
//! The template is parsed as JSON first; `{{name}}` placeholders are then replaced inside its
//! string values (and keys) with the event's values. Values are inserted as string content, so
//! they are escaped by the JSON serializer and can never break the document or inject fields.
//! Money is an exact decimal string (`"12.30"`, `"1500"` for JPY, `"1.250"` for KWD) from the
//! integer minor units and the currency's exponent, never a float.
//!
//! A template that is not valid JSON, or that names a placeholder its kind does not have, is a
//! permanent failure with reason [`ReasonCode::TemplateRender`]: the event is dead-lettered
//! with the endpoint and the problem named, and processing moves on.

use ledgerflow_core::{Currency, Envelope, Event, Failure, ReasonCode, format_minor};
use ledgerflow_tenants::{NotificationKind, TenantConfig, WebhookEndpoint};
use serde_json::Value;

/// Renders the body of `kind` for `envelope`, for one endpoint of `tenant`.
pub fn render(
    kind: NotificationKind,
    envelope: &Envelope,
    tenant: &TenantConfig,
    endpoint: &WebhookEndpoint,
) -> Result<String, Failure> {
    let fail = |detail: String| {
        Failure::permanent(
            ReasonCode::TemplateRender,
            format!("webhook {} template {kind}: {detail}", endpoint.id),
        )
    };
    let values = Values::of(kind, envelope, tenant)?;
    let template: Value = serde_json::from_str(endpoint.template(kind))
        .map_err(|e| fail(format!("is not valid JSON ({e})")))?;
    let rendered = substitute_value(template, &values).map_err(fail)?;
    serde_json::to_string(&rendered).map_err(|e| fail(format!("cannot be serialized ({e})")))
}

/// The placeholder values of one event.
#[derive(Debug)]
struct Values<'a> {
    kind: NotificationKind,
    pairs: Vec<(&'static str, String)>,
    envelope: &'a Envelope,
}

impl<'a> Values<'a> {
    fn of(
        kind: NotificationKind,
        envelope: &'a Envelope,
        tenant: &TenantConfig,
    ) -> Result<Self, Failure> {
        let meta = &envelope.meta;
        let mut pairs: Vec<(&'static str, String)> = vec![
            ("event_id", meta.event_id.to_string()),
            ("event_type", meta.event_type.as_str().to_owned()),
            ("tenant_id", meta.tenant_id.to_string()),
            ("legal_entity", tenant.legal_entity.clone()),
            ("occurred_at", rfc3339(meta.occurred_at)),
        ];
        let money = |currency: &str, minor: i64| -> Result<String, Failure> {
            let currency = Currency::parse(currency).map_err(|e| {
                Failure::permanent(ReasonCode::Validation, format!("currency: {e}"))
            })?;
            Ok(format_minor(i128::from(minor), currency.exponent()))
        };
        match (&envelope.event, kind) {
            (Event::InvoiceFinalized(e), NotificationKind::InvoiceReady) => {
                pairs.extend([
                    ("customer_id", e.customer_id.clone()),
                    ("currency", e.currency.clone()),
                    ("amount", money(&e.currency, e.total_minor)?),
                    ("subtotal", money(&e.currency, e.subtotal_minor)?),
                    ("tax", money(&e.currency, e.tax_minor)?),
                    ("invoice_id", e.invoice_id.clone()),
                    ("invoice_number", e.invoice_number.clone()),
                    ("issued_at", rfc3339(e.issued_at)),
                    ("due_at", rfc3339(e.due_at)),
                ]);
            }
            (Event::PaymentCaptured(e), NotificationKind::PaymentReceipt) => {
                pairs.extend([
                    ("customer_id", e.customer_id.clone()),
                    ("currency", e.currency.clone()),
                    ("amount", money(&e.currency, e.amount_minor)?),
                    ("fee", money(&e.currency, e.fee_minor)?),
                    ("payment_id", e.payment_id.clone()),
                    ("invoice_id", e.invoice_id.clone()),
                    ("method", e.method.clone()),
                    ("captured_at", rfc3339(e.captured_at)),
                ]);
            }
            (Event::SubscriptionActivated(e), NotificationKind::Welcome) => {
                pairs.extend([
                    ("customer_id", e.customer_id.clone()),
                    ("currency", e.currency.clone()),
                    ("amount", money(&e.currency, e.unit_amount_minor)?),
                    ("subscription_id", e.subscription_id.clone()),
                    ("plan_id", e.plan_id.clone()),
                    ("billing_interval", e.billing_interval.clone()),
                    ("started_at", rfc3339(e.started_at)),
                ]);
            }
            (Event::CreditMemoIssued(e), NotificationKind::CreditIssued) => {
                pairs.extend([
                    ("customer_id", e.customer_id.clone()),
                    ("currency", e.currency.clone()),
                    ("amount", money(&e.currency, e.total_minor)?),
                    ("credit_memo_id", e.credit_memo_id.clone()),
                    ("credit_memo_number", e.credit_memo_number.clone()),
                    ("invoice_id", e.invoice_id.clone()),
                    ("reason", e.reason.clone()),
                    ("issued_at", rfc3339(e.issued_at)),
                ]);
            }
            (event, kind) => {
                return Err(Failure::permanent(
                    ReasonCode::UnknownEventType,
                    format!("{} has no {kind} notification", event.event_type()),
                ));
            }
        }
        Ok(Self {
            kind,
            pairs,
            envelope,
        })
    }

    fn get(&self, name: &str) -> Result<&str, String> {
        if !self.kind.has_placeholder(name) {
            return Err(format!(
                "uses the unknown placeholder {{{{{name}}}}}; {} knows {}",
                self.kind,
                self.kind.placeholders().join(", ")
            ));
        }
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| {
                format!(
                    "placeholder {{{{{name}}}}} has no value for event {}",
                    self.envelope.meta.event_id
                )
            })
    }
}

fn substitute_value(value: Value, values: &Values<'_>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(substitute(&s, values)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| substitute_value(v, values))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, v) in map {
                out.insert(substitute(&k, values)?, substitute_value(v, values)?);
            }
            Value::Object(out)
        }
        other => other,
    })
}

/// Replaces every `{{name}}` (spaces around the name allowed) in `text`.
fn substitute(text: &str, values: &Values<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "has a '{{' without its closing '}}'".to_owned())?;
        out.push_str(values.get(after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// RFC 3339 (UTC, microseconds when present) of Unix microseconds; the raw number when out of
/// range.
fn rfc3339(micros: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use ledgerflow_core::{
        Coordinates, CreditMemoIssued, InvoiceFinalized, InvoiceLine, PaymentCaptured, SchemaId,
        SubscriptionActivated, TenantId,
    };
    use ledgerflow_tenants::{AccountMapping, NotificationTemplates, SecretRef};

    use super::*;

    pub(crate) const EVENT_ID: &str = "6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f";

    pub(crate) fn tenant(currency: &str, webhooks: Vec<WebhookEndpoint>) -> TenantConfig {
        TenantConfig {
            tenant_id: TenantId::parse("acme").unwrap(),
            legal_entity: "Acme \"Quoted\" Corp.".to_owned(),
            functional_currency: Currency::parse(currency).unwrap(),
            erp: None,
            accounts: AccountMapping {
                receivable: "1200".into(),
                revenue_default: "4000".into(),
                revenue_by_family: BTreeMap::new(),
                tax_payable: "2200".into(),
                cash_clearing: "1010".into(),
                payment_fees: "6150".into(),
                unapplied_cash: "2400".into(),
            },
            webhooks,
            rate_limit_per_sec: Some(5),
        }
    }

    pub(crate) fn endpoint(id: &str, events: Vec<ledgerflow_core::EventType>) -> WebhookEndpoint {
        WebhookEndpoint {
            id: id.to_owned(),
            url: format!("https://hooks.example/{id}"),
            secret: SecretRef::Env {
                env: "WHSEC".into(),
            },
            events,
            templates: NotificationTemplates::default(),
        }
    }

    pub(crate) fn envelope(event: Event) -> Envelope {
        let meta = event.validate().expect("valid test event");
        Envelope::new(
            meta,
            event,
            SchemaId(1),
            Coordinates {
                topic: "billing.events".into(),
                partition: 0,
                offset: 7,
            },
        )
    }

    pub(crate) fn invoice(currency: &str, total: i64) -> Event {
        Event::InvoiceFinalized(InvoiceFinalized {
            event_id: EVENT_ID.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_123_456,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing".into(),
            invoice_id: "inv-1".into(),
            invoice_number: "INV-\"0001\"".into(),
            customer_id: "cus-1".into(),
            subscription_id: None,
            currency: currency.into(),
            issued_at: 1_700_000_000_000_000,
            due_at: 1_702_592_000_000_000,
            lines: vec![InvoiceLine {
                line_id: "l1".into(),
                description: "Pro".into(),
                product_family: "platform".into(),
                quantity_micros: 1_000_000,
                unit_amount_minor: total,
                amount_minor: total,
            }],
            tax_lines: vec![],
            subtotal_minor: total,
            tax_minor: 0,
            total_minor: total,
            purchase_order: None,
        })
    }

    fn payment() -> Event {
        Event::PaymentCaptured(PaymentCaptured {
            event_id: EVENT_ID.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing".into(),
            payment_id: "pay-1".into(),
            invoice_id: "inv-1".into(),
            customer_id: "cus-1".into(),
            currency: "KWD".into(),
            amount_minor: 1250,
            fee_minor: 5,
            method: "card".into(),
            processor_reference: "ch_1".into(),
            captured_at: 1_700_000_000_000_000,
            settlement_currency: None,
        })
    }

    fn welcome() -> Event {
        Event::SubscriptionActivated(SubscriptionActivated {
            event_id: EVENT_ID.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing".into(),
            subscription_id: "sub-1".into(),
            customer_id: "cus-1".into(),
            plan_id: "pro".into(),
            product_family: "platform".into(),
            currency: "JPY".into(),
            unit_amount_minor: 1500,
            billing_interval: "month".into(),
            started_at: 1_700_000_000_000_000,
        })
    }

    fn credit() -> Event {
        Event::CreditMemoIssued(CreditMemoIssued {
            event_id: EVENT_ID.into(),
            tenant_id: "acme".into(),
            occurred_at: 1_700_000_000_000_000,
            correlation_id: "c".into(),
            causation_id: None,
            source: "billing".into(),
            credit_memo_id: "cm-1".into(),
            credit_memo_number: "CM-1".into(),
            invoice_id: "inv-1".into(),
            customer_id: "cus-1".into(),
            currency: "USD".into(),
            product_family: "platform".into(),
            amount_minor: 1000,
            tax_minor: 80,
            total_minor: 1080,
            reason: "goodwill".into(),
            issued_at: 1_700_000_000_000_000,
        })
    }

    fn with_template(kind: NotificationKind, template: &str) -> WebhookEndpoint {
        let mut e = endpoint("ops", vec![]);
        let slot = match kind {
            NotificationKind::InvoiceReady => &mut e.templates.invoice_ready,
            NotificationKind::PaymentReceipt => &mut e.templates.payment_receipt,
            NotificationKind::Welcome => &mut e.templates.welcome,
            NotificationKind::CreditIssued => &mut e.templates.credit_issued,
        };
        *slot = Some(template.to_owned());
        e
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).expect("rendered bodies are JSON")
    }

    #[test]
    fn default_templates_render_exact_amounts_for_every_kind() {
        let t = tenant("USD", vec![]);
        let ep = endpoint("ops", vec![]);
        let cases = [
            (
                NotificationKind::InvoiceReady,
                invoice("USD", 123_456),
                "invoice.ready",
                "1234.56",
            ),
            (
                NotificationKind::PaymentReceipt,
                payment(),
                "payment.receipt",
                "1.250",
            ),
            (
                NotificationKind::Welcome,
                welcome(),
                "subscription.welcome",
                "1500",
            ),
            (
                NotificationKind::CreditIssued,
                credit(),
                "credit.issued",
                "10.80",
            ),
        ];
        for (kind, event, type_name, amount) in cases {
            let body = json(&render(kind, &envelope(event), &t, &ep).unwrap());
            assert_eq!(body["type"], type_name, "{kind}");
            assert_eq!(body["data"]["amount"], amount, "{kind}");
            assert_eq!(body["data"]["event_id"], EVENT_ID, "{kind}");
            assert_eq!(body["data"]["tenant_id"], "acme", "{kind}");
            assert_eq!(body["data"]["customer_id"], "cus-1", "{kind}");
            let timestamp = body["timestamp"].as_str().unwrap();
            assert!(timestamp.starts_with("2023-11-14T22:13:20"), "{body}");
        }
        let body = json(
            &render(
                NotificationKind::InvoiceReady,
                &envelope(invoice("USD", 5)),
                &t,
                &ep,
            )
            .unwrap(),
        );
        assert_eq!(body["data"]["amount"], "0.05");
        assert_eq!(body["data"]["invoice_number"], "INV-\"0001\"");
        assert_eq!(body["timestamp"], "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn custom_templates_substitute_inside_strings_and_escape_values() {
        let t = tenant("USD", vec![]);
        let ep = with_template(
            NotificationKind::InvoiceReady,
            r#"{"text": "Invoice {{ invoice_number }} for {{legal_entity}}: {{amount}} {{currency}}", "n": 1, "tags": ["{{tenant_id}}", null]}"#,
        );
        let body = render(
            NotificationKind::InvoiceReady,
            &envelope(invoice("EUR", 1999)),
            &t,
            &ep,
        )
        .unwrap();
        let value = json(&body);
        assert_eq!(
            value["text"],
            "Invoice INV-\"0001\" for Acme \"Quoted\" Corp.: 19.99 EUR"
        );
        assert_eq!(value["n"], 1);
        assert_eq!(value["tags"], serde_json::json!(["acme", null]));
        // Deterministic: the same event renders the same bytes.
        let again = render(
            NotificationKind::InvoiceReady,
            &envelope(invoice("EUR", 1999)),
            &t,
            &ep,
        )
        .unwrap();
        assert_eq!(body, again);
    }

    #[test]
    fn unrenderable_templates_are_permanent_template_render_failures() {
        let t = tenant("USD", vec![]);
        for (template, expected) in [
            (r#"{"text": "{{amount}}""#, "is not valid JSON"),
            (r#"{"amount": {{amount}}}"#, "is not valid JSON"),
            (
                r#"{"text": "{{payment_id}}"}"#,
                "unknown placeholder {{payment_id}}",
            ),
            (r#"{"text": "{{amount"}"#, "without its closing"),
        ] {
            let ep = with_template(NotificationKind::InvoiceReady, template);
            let err = render(
                NotificationKind::InvoiceReady,
                &envelope(invoice("USD", 100)),
                &t,
                &ep,
            )
            .unwrap_err();
            assert_eq!(err.reason(), Some(ReasonCode::TemplateRender), "{template}");
            let text = err.to_string();
            assert!(text.contains(expected), "{template}: {text}");
            assert!(
                text.contains("webhook ops template invoice_ready"),
                "{text}"
            );
        }
    }

    #[test]
    fn every_listed_placeholder_has_a_value() {
        let t = tenant("USD", vec![]);
        let events = [
            (NotificationKind::InvoiceReady, invoice("USD", 100)),
            (NotificationKind::PaymentReceipt, payment()),
            (NotificationKind::Welcome, welcome()),
            (NotificationKind::CreditIssued, credit()),
        ];
        for (kind, event) in events {
            let all: Vec<String> = kind
                .placeholders()
                .iter()
                .map(|p| format!("\"{p}\": \"{{{{{p}}}}}\""))
                .collect();
            let ep = with_template(kind, &format!("{{{}}}", all.join(", ")));
            let body = json(&render(kind, &envelope(event), &t, &ep).unwrap());
            for p in kind.placeholders() {
                let v = body[p].as_str().unwrap();
                assert!(!v.is_empty() && !v.contains("{{"), "{kind} {p}: {v:?}");
            }
        }
    }
}
