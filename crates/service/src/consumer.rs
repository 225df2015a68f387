//! The consumers this service runs and everything each brings along. A consumer is one
//! [`ConsumerKind`] variant and one arm in [`ConsumerKind::spec`]: its name, its logic (which
//! also gives its schema), its companions (outbox dispatchers, each with its drain-on-exit
//! step) and the gauges the metrics sampler keeps for it.

use std::fmt;
use std::sync::Arc;

use ledgerflow_store::{Backend, ErasedConsumer, Migrations};
use serde::Serialize;

use crate::companion::Dispatcher;

/// A consumer `ledgerflow run` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConsumerKind {
    /// Journals and AR documents, delivered to each tenant's ERP.
    ErpReceivables,
    /// The analytics star schema.
    Warehouse,
    /// Signed webhooks to tenant endpoints.
    Notifications,
}

/// A gauge the metrics sampler keeps for a consumer, besides lag and dead-letter depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Rows of a dispatcher's outbox by status, and by (bounded) tenant.
    Outbox(Dispatcher),
    /// Payments waiting for their invoice, and the oldest one's age.
    HeldPayments,
}

/// What a consumer is made of.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Its name: part of the group id, the inbox and audit keys.
    pub name: &'static str,
    /// Its logic, handed to the runtime.
    pub logic: fn() -> Arc<dyn ErasedConsumer>,
    /// Background tasks that run beside it and stop after it.
    pub companions: &'static [Dispatcher],
    /// Gauges the sampler keeps for it.
    pub gauges: &'static [Gauge],
}

impl ConsumerKind {
    /// Every consumer, in start order.
    pub const ALL: [Self; 3] = [Self::ErpReceivables, Self::Warehouse, Self::Notifications];

    /// What the consumer is made of.
    pub fn spec(self) -> Spec {
        match self {
            Self::ErpReceivables => Spec {
                name: ledgerflow_erp_receivables::CONSUMER_NAME,
                logic: || Arc::new(ledgerflow_erp_receivables::ErpReceivables),
                companions: &[Dispatcher::Erp],
                gauges: &[Gauge::Outbox(Dispatcher::Erp), Gauge::HeldPayments],
            },
            Self::Warehouse => Spec {
                name: ledgerflow_warehouse_sink::CONSUMER_NAME,
                logic: || Arc::new(ledgerflow_warehouse_sink::Warehouse),
                companions: &[],
                gauges: &[],
            },
            Self::Notifications => Spec {
                name: ledgerflow_notifications::CONSUMER_NAME,
                logic: || Arc::new(ledgerflow_notifications::Notifications),
                companions: &[Dispatcher::Webhooks],
                gauges: &[Gauge::Outbox(Dispatcher::Webhooks)],
            },
        }
    }

    /// The consumer's name.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The consumer of a name.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == raw)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown consumer {raw:?}; known: {}", known.join(", "))
            })
    }

    /// Its logic, for the runtime and the redrive tools.
    pub fn logic(self) -> Arc<dyn ErasedConsumer> {
        (self.spec().logic)()
    }

    /// Its versioned migrations (see `ledgerflow_store::migrate`).
    pub fn schema(self, backend: Backend) -> Migrations {
        self.logic().schema(backend)
    }
}

impl fmt::Display for ConsumerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for ConsumerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_logic() {
        for kind in ConsumerKind::ALL {
            assert_eq!(ConsumerKind::parse(kind.name()), Ok(kind));
            assert_eq!(kind.logic().name(), kind.name());
            assert!(kind.schema(Backend::Sqlite).latest() > 0);
        }
        let err = ConsumerKind::parse("ledger").unwrap_err();
        assert_eq!(
            err,
            "unknown consumer \"ledger\"; known: erp-receivables, warehouse, notifications"
        );
    }
}
