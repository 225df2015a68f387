//! Lineage: everything the ledger knows of one event, per consumer, for `ledgerflow lineage`.
//!
//! Each crate reads its own tables ([`ledgerflow_store::lineage`] the inbox, audit entries and
//! dead letters; [`ledgerflow_erp_receivables::lineage`] journals, AR documents, payments,
//! applications and ERP postings; [`ledgerflow_warehouse_sink::lineage`] warehouse rows;
//! [`ledgerflow_notifications::lineage`] webhooks and their deliveries); this module puts
//! them together. An invoice's lineage is its `invoice_finalized` event's, plus the lineage of
//! every payment and credit memo that refers to the invoice, the applications to it, and any
//! other event with a journal of the invoice (a void).
//!
//! Reads only (the consumers' idempotent DDL is applied first, as by every command, so a store
//! where a consumer never ran answers with nothing rather than an error).

use ledgerflow_erp_receivables::lineage::{self as erp, ErpLineage, LineageApplication};
use ledgerflow_notifications::lineage::{self as notifications, NotificationLineage};
use ledgerflow_store::lineage::{self as store_lineage, Coordinate, InboxEntry};
use ledgerflow_store::{AuditRow, DeadLetter, Store};
use ledgerflow_warehouse_sink::lineage::{self as warehouse, WarehouseLineage};
use serde::Serialize;

use crate::{ConsumerKind, ServiceError};

/// What one consumer knows of the event.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerLineage {
    /// The consumer.
    pub consumer: String,
    /// Its audit entries at the event's coordinates, oldest first.
    pub audit: Vec<AuditRow>,
    /// Its inbox row (the event was applied), when it has one.
    pub inbox: Option<InboxEntry>,
    /// Its dead letters of the event or at its coordinates.
    pub dead_letters: Vec<DeadLetter>,
    /// erp-receivables' effects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erp: Option<ErpLineage>,
    /// warehouse's rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warehouse: Option<WarehouseLineage>,
    /// notifications' webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationLineage>,
}

/// Everything the ledger knows of one event.
#[derive(Debug, Clone, Serialize)]
pub struct LineageReport {
    /// The event.
    pub event_id: String,
    /// Its tenant, when the ledger knows it.
    pub tenant_id: Option<String>,
    /// Its type, when the ledger knows it.
    pub event_type: Option<String>,
    /// The event's correlation id (from the audit log).
    pub correlation_id: Option<String>,
    /// The W3C trace id of the record's `traceparent` header (from the audit log).
    pub trace_id: Option<String>,
    /// Every Kafka coordinate the event was seen at.
    pub coordinates: Vec<Coordinate>,
    /// Per consumer (every consumer, or the one asked for).
    pub consumers: Vec<ConsumerLineage>,
}

/// An invoice's lineage: its own event's, and those of the events that refer to it.
#[derive(Debug, Clone, Serialize)]
pub struct InvoiceLineageReport {
    /// Tenant.
    pub tenant_id: String,
    /// Invoice id.
    pub invoice_id: String,
    /// The `invoice_finalized` event.
    pub invoice: LineageReport,
    /// Payments applied to the invoice (with the event that wrote each application journal).
    pub applications: Vec<LineageApplication>,
    /// `payment_captured` events of the invoice's payments.
    pub payments: Vec<LineageReport>,
    /// `credit_memo_issued` events of the invoice's credit memos.
    pub credit_memos: Vec<LineageReport>,
    /// Other events with a journal of the invoice (a void, say).
    pub others: Vec<LineageReport>,
}

/// Which consumers to report: one, or all.
fn kinds(consumer: Option<ConsumerKind>) -> Vec<ConsumerKind> {
    consumer.map_or_else(|| ConsumerKind::ALL.to_vec(), |c| vec![c])
}

async fn prepare(store: &Store, consumer: Option<ConsumerKind>) -> Result<(), ServiceError> {
    for kind in kinds(consumer) {
        store
            .apply_schema(&kind.schema(store.backend()))
            .await
            .map_err(ServiceError::store(format!("applying the {kind} schema")))?;
    }
    Ok(())
}

/// The lineage of one event (of `consumer`, or of every consumer). `tenant` narrows the
/// lookups of the consumers' tables when the store does not name the event's tenant. An event
/// the ledger knows nothing of is an error.
pub async fn event(
    store: &Store,
    consumer: Option<ConsumerKind>,
    tenant: Option<&str>,
    event_id: &str,
) -> Result<LineageReport, ServiceError> {
    prepare(store, consumer).await?;
    event_prepared(store, consumer, tenant, event_id).await
}

async fn event_prepared(
    store: &Store,
    consumer: Option<ConsumerKind>,
    tenant: Option<&str>,
    event_id: &str,
) -> Result<LineageReport, ServiceError> {
    let known = store_lineage::for_event(store, consumer.map(ConsumerKind::name), event_id)
        .await
        .map_err(ServiceError::store(format!(
            "reading the lineage of event {event_id}"
        )))?;
    let tenant_id = known
        .tenant_id()
        .map(str::to_owned)
        .or_else(|| tenant.map(str::to_owned));
    let tenant_ref = tenant_id.as_deref();
    let mut consumers = Vec::new();
    let mut any_effect = false;
    for kind in kinds(consumer) {
        let name = kind.name();
        let mut part = ConsumerLineage {
            consumer: name.to_owned(),
            audit: known
                .audit
                .iter()
                .filter(|a| a.consumer == name)
                .cloned()
                .collect(),
            inbox: known.inbox.iter().find(|i| i.consumer == name).cloned(),
            dead_letters: known
                .dead_letters
                .iter()
                .filter(|d| d.consumer == name)
                .cloned()
                .collect(),
            erp: None,
            warehouse: None,
            notifications: None,
        };
        match kind {
            ConsumerKind::ErpReceivables => {
                let found = erp::for_event(store.pool(), store.backend(), tenant_ref, event_id)
                    .await
                    .map_err(ServiceError::component("reading erp-receivables' lineage"))?;
                any_effect |= !found.is_empty();
                part.erp = Some(found);
            }
            ConsumerKind::Warehouse => {
                let found =
                    warehouse::for_event(store.pool(), store.backend(), tenant_ref, event_id)
                        .await
                        .map_err(ServiceError::component("reading the warehouse's lineage"))?;
                any_effect |= !found.rows.is_empty();
                part.warehouse = Some(found);
            }
            ConsumerKind::Notifications => {
                let found = notifications::for_event(store.pool(), tenant_ref, event_id)
                    .await
                    .map_err(ServiceError::component("reading notifications' lineage"))?;
                any_effect |= !found.webhooks.is_empty();
                part.notifications = Some(found);
            }
        }
        consumers.push(part);
    }
    if known.is_empty() && !any_effect {
        let whose = consumer.map_or_else(String::new, |c| format!(" of consumer {c}"));
        return Err(ServiceError::Request(format!(
            "no event {event_id}{whose} in the ledger (no inbox row, audit entry, dead letter or \
             effect names it)"
        )));
    }
    let event_type = known
        .inbox
        .iter()
        .map(|i| i.event_type.clone())
        .chain(known.audit.iter().filter_map(|a| a.event_type.clone()))
        .chain(
            known
                .dead_letters
                .iter()
                .filter_map(|d| d.event_type.clone()),
        )
        .next();
    Ok(LineageReport {
        event_id: event_id.to_owned(),
        tenant_id,
        event_type,
        correlation_id: known.audit.iter().find_map(|a| a.correlation_id.clone()),
        trace_id: known.audit.iter().find_map(|a| a.trace_id.clone()),
        coordinates: known.coordinates,
        consumers,
    })
}

/// The lineage of invoice `invoice_id` of `tenant`: its `invoice_finalized` event, found
/// through erp-receivables' AR documents, then every payment and credit memo of it. An invoice
/// erp-receivables never posted is an error.
pub async fn invoice(
    store: &Store,
    consumer: Option<ConsumerKind>,
    tenant: &str,
    invoice_id: &str,
) -> Result<InvoiceLineageReport, ServiceError> {
    prepare(store, consumer).await?;
    // The references are erp-receivables' tables, whichever consumer is reported.
    if consumer.is_some_and(|c| c != ConsumerKind::ErpReceivables) {
        prepare(store, Some(ConsumerKind::ErpReceivables)).await?;
    }
    let refs = erp::invoice_refs(store.pool(), tenant, invoice_id)
        .await
        .map_err(ServiceError::component("finding an invoice's events"))?;
    let Some(invoice_event) = refs.invoice_event_id else {
        return Err(ServiceError::Request(format!(
            "no invoice {invoice_id} of tenant {tenant} in the ledger (erp-receivables has no \
             invoice_finalized event for it)"
        )));
    };
    let invoice = event_prepared(store, consumer, Some(tenant), &invoice_event).await?;
    let mut payments = Vec::new();
    for id in &refs.payment_event_ids {
        payments.push(event_prepared(store, consumer, Some(tenant), id).await?);
    }
    let mut credit_memos = Vec::new();
    for id in &refs.credit_memo_event_ids {
        credit_memos.push(event_prepared(store, consumer, Some(tenant), id).await?);
    }
    let mut others = Vec::new();
    for id in &refs.other_event_ids {
        others.push(event_prepared(store, consumer, Some(tenant), id).await?);
    }
    Ok(InvoiceLineageReport {
        tenant_id: tenant.to_owned(),
        invoice_id: invoice_id.to_owned(),
        invoice,
        applications: refs.applications,
        payments,
        credit_memos,
        others,
    })
}
