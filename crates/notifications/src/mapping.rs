//! The consumer: event -> notifications (pure), and the set-based outbox writer.

use ledgerflow_core::{Envelope, EventId, EventType, Failure, now_micros};
use ledgerflow_store::{Backend, ConsumerLogic, Rows, StoreError};
use ledgerflow_tenants::{NotificationKind, TenantConfig};
use sha1::{Digest, Sha1};
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::render::render;
use crate::schema;

/// Stable consumer name (group id suffix, store key).
pub const CONSUMER_NAME: &str = "notifications";

/// UUID namespace of webhook-ids (a random v4, fixed forever: changing it re-keys every
/// notification, and receivers dedup by webhook-id).
const WEBHOOK_NAMESPACE: Uuid = Uuid::from_u128(0x3b6f_0c8e_5d1a_4c2e_9f47_a1d2_e0b3_c4f5);

/// The webhook-id of the notification of `event_id` for endpoint `endpoint_id`:
/// `msg_` + UUID v5 (RFC 9562, SHA-1) of `"<event id>/<endpoint id>"` in a fixed namespace.
/// The same on every derivation, replay and attempt, so receivers can dedup by it.
pub fn webhook_id(event_id: &EventId, endpoint_id: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(WEBHOOK_NAMESPACE.as_bytes());
    hasher.update(format!("{event_id}/{endpoint_id}").as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    format!(
        "msg_{}",
        uuid::Builder::from_sha1_bytes(bytes).into_uuid().simple()
    )
}

/// One notification for one endpoint: an outbox row to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// `msg_<uuid v5>`, see [`webhook_id`].
    pub webhook_id: String,
    /// Kind of notification.
    pub kind: NotificationKind,
    /// Endpoint id within the tenant.
    pub endpoint_id: String,
    /// Where it is POSTed.
    pub url: String,
    /// JSON of the endpoint's secret reference (never the secret).
    pub secret_ref: String,
    /// The tenant's outbound rate limit at mapping time.
    pub rate_limit_per_sec: Option<u32>,
    /// The rendered JSON body, sent unchanged on every attempt.
    pub body: String,
}

/// The effect of one event: its notifications, one per subscribed endpoint (none when the
/// tenant has no endpoint for the type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationEffect {
    /// Outbox rows.
    pub messages: Vec<OutboxMessage>,
}

/// The `notifications` consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

impl ConsumerLogic for Notifications {
    type Effect = NotificationEffect;

    fn name(&self) -> &'static str {
        CONSUMER_NAME
    }

    fn handles(&self, event_type: EventType) -> bool {
        NotificationKind::for_event(event_type).is_some()
    }

    fn map(
        &self,
        envelope: &Envelope,
        tenant: &TenantConfig,
    ) -> Result<NotificationEffect, Failure> {
        let event_type = envelope.meta.event_type;
        let Some(kind) = NotificationKind::for_event(event_type) else {
            return Ok(NotificationEffect::default());
        };
        let mut messages = Vec::new();
        for endpoint in tenant
            .webhooks
            .iter()
            .filter(|w| w.subscribes_to(event_type))
        {
            let body = render(kind, envelope, tenant, endpoint)?;
            // Serializing a two-variant enum of strings cannot fail.
            let secret_ref = serde_json::to_string(&endpoint.secret).unwrap_or_default();
            messages.push(OutboxMessage {
                webhook_id: webhook_id(&envelope.meta.event_id, &endpoint.id),
                kind,
                endpoint_id: endpoint.id.clone(),
                url: endpoint.url.clone(),
                secret_ref,
                rate_limit_per_sec: tenant.rate_limit_per_sec,
                body,
            });
        }
        Ok(NotificationEffect { messages })
    }

    fn schema(&self, backend: Backend) -> ledgerflow_store::Migrations {
        schema::migrations(backend)
    }

    async fn write<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        effects: &'a [(&'a Envelope, NotificationEffect)],
    ) -> Result<(), StoreError> {
        let now = now_micros();
        let rows: Vec<(&Envelope, &OutboxMessage)> = effects
            .iter()
            .flat_map(|(env, effect)| effect.messages.iter().map(move |m| (*env, m)))
            .collect();
        let mut values = Rows::new(
            backend,
            &[
                "text", "text", "text", "text", "text", "text", "text", "text", "bigint", "text",
                "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
            ],
        );
        for (env, m) in &rows {
            values
                .push(m.webhook_id.as_str())
                .push(env.meta.tenant_id.as_str())
                .push(env.meta.event_id.to_string())
                .push(env.meta.event_type.as_str())
                .push(m.kind.as_str())
                .push(m.endpoint_id.as_str())
                .push(m.url.as_str())
                .push(m.secret_ref.as_str())
                .push(m.rate_limit_per_sec.map(i64::from))
                .push(m.body.as_str())
                .push("pending")
                .push(0i64)
                .push(0i64)
                .push(now)
                .push(now)
                .push(now)
                .push(None::<i64>);
        }
        values
            .execute(
                conn,
                "inserting notification outbox rows",
                "INSERT INTO notification_outbox (webhook_id, tenant_id, event_id, event_type, \
                 kind, endpoint_id, url, secret_ref, rate_limit_per_sec, body, status, attempts, \
                 requeued_attempts, next_attempt_at, created_at, updated_at, delivered_at)",
                "ON CONFLICT (webhook_id) DO NOTHING",
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ledgerflow_core::ReasonCode;

    use super::*;
    use crate::render::tests::{EVENT_ID, endpoint, envelope, invoice, tenant};

    #[test]
    fn handles_the_four_notification_types_only() {
        let handled: Vec<EventType> = EventType::ALL
            .into_iter()
            .filter(|t| Notifications.handles(*t))
            .collect();
        assert_eq!(
            handled,
            [
                EventType::SubscriptionActivated,
                EventType::InvoiceFinalized,
                EventType::PaymentCaptured,
                EventType::CreditMemoIssued
            ]
        );
    }

    #[test]
    fn one_message_per_subscribed_endpoint_with_stable_webhook_ids() {
        let t = tenant(
            "USD",
            vec![
                endpoint("all", vec![]),
                endpoint("invoices", vec![EventType::InvoiceFinalized]),
                endpoint("payments", vec![EventType::PaymentCaptured]),
            ],
        );
        let env = envelope(invoice("USD", 1000));
        let effect = Notifications.map(&env, &t).unwrap();
        let ids: Vec<&str> = effect
            .messages
            .iter()
            .map(|m| m.endpoint_id.as_str())
            .collect();
        assert_eq!(ids, ["all", "invoices"]);
        let m = &effect.messages[0];
        assert_eq!(m.kind, NotificationKind::InvoiceReady);
        assert_eq!(m.url, "https://hooks.example/all");
        assert_eq!(m.secret_ref, r#"{"env":"WHSEC"}"#);
        assert_eq!(m.rate_limit_per_sec, Some(5));
        assert_eq!(m.webhook_id, webhook_id(&env.meta.event_id, "all"));
        assert_ne!(m.webhook_id, effect.messages[1].webhook_id);
        // A second derivation is identical (replays add nothing new).
        assert_eq!(Notifications.map(&env, &t).unwrap(), effect);
        // No endpoint: applied with no message.
        let none = Notifications.map(&env, &tenant("USD", vec![])).unwrap();
        assert!(none.messages.is_empty());
    }

    #[test]
    fn webhook_ids_are_pinned() {
        let id = EventId::parse(EVENT_ID).unwrap();
        let a = webhook_id(&id, "default");
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
        let uuid = Uuid::parse_str(&a[4..]).unwrap();
        assert_eq!(uuid.get_version_num(), 5);
        // Python: uuid.uuid5(uuid.UUID(int=0x3b6f0c8e...c4f5), f"{EVENT_ID}/default").hex
        assert_eq!(a, "msg_eb17763d2b8b5c21959dd5a9e0be9155");
        assert_ne!(a, webhook_id(&id, "other"));
    }

    #[test]
    fn a_bad_template_dead_letters_with_template_render() {
        let mut ep = endpoint("ops", vec![]);
        ep.templates.invoice_ready = Some("{not json".into());
        let t = tenant("USD", vec![ep]);
        let err = Notifications
            .map(&envelope(invoice("USD", 1000)), &t)
            .unwrap_err();
        assert_eq!(err.reason(), Some(ReasonCode::TemplateRender));
    }
}
