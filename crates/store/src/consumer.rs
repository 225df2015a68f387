//! What a consumer plugs into the pipeline: a pure mapping from an event to typed effects, and
//! a set-based writer for those effects inside the batch transaction.
//!
//! [`ConsumerLogic`] is the typed trait consumer crates implement; [`ErasedConsumer`] is its
//! object-safe twin (effects boxed as `dyn Any`) with a blanket impl, so the runtime holds
//! `Arc<dyn ErasedConsumer>` and never knows the effect types.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use ledgerflow_core::{Envelope, EventType, Failure};
use ledgerflow_tenants::TenantConfig;
use sqlx::AnyConnection;

use crate::{Backend, Migrations, StoreError};

/// A consumer's business logic.
pub trait ConsumerLogic: Send + Sync + 'static {
    /// The rows one event turns into (journal entries, facts, outbox messages, ...).
    type Effect: Send + Sync + 'static;

    /// Stable consumer name (`erp-receivables`); part of the group id and every store key.
    fn name(&self) -> &'static str;

    /// Whether this consumer has an effect for the type; other types are audited as skipped.
    fn handles(&self, event_type: EventType) -> bool;

    /// Pure mapping, no I/O. A permanent failure dead-letters the event with its reason.
    fn map(&self, envelope: &Envelope, tenant: &TenantConfig) -> Result<Self::Effect, Failure>;

    /// The versioned migrations of the consumer's own tables (see [`crate::migrate`]).
    fn schema(&self, backend: Backend) -> Migrations;

    /// Writes the effects of the batch's NEW events (never duplicates) inside the batch
    /// transaction. Set-based: a handful of statements per batch, not per event.
    fn write<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        effects: &'a [(&'a Envelope, Self::Effect)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a;
}

/// Type-erased effects of one batch.
pub type Effects = Vec<Box<dyn Any + Send + Sync>>;

/// Object-safe form of [`ConsumerLogic`].
pub trait ErasedConsumer: Send + Sync + 'static {
    /// See [`ConsumerLogic::name`].
    fn name(&self) -> &'static str;
    /// See [`ConsumerLogic::handles`].
    fn handles(&self, event_type: EventType) -> bool;
    /// See [`ConsumerLogic::map`].
    fn map_erased(
        &self,
        envelope: &Envelope,
        tenant: &TenantConfig,
    ) -> Result<Box<dyn Any + Send + Sync>, Failure>;
    /// See [`ConsumerLogic::schema`].
    fn schema(&self, backend: Backend) -> Migrations;
    /// See [`ConsumerLogic::write`]; `effects[i]` belongs to `envelopes[i]`.
    fn write_erased<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        envelopes: &'a [&'a Envelope],
        effects: Effects,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;
}

impl<C: ConsumerLogic> ErasedConsumer for C {
    fn name(&self) -> &'static str {
        ConsumerLogic::name(self)
    }

    fn handles(&self, event_type: EventType) -> bool {
        ConsumerLogic::handles(self, event_type)
    }

    fn map_erased(
        &self,
        envelope: &Envelope,
        tenant: &TenantConfig,
    ) -> Result<Box<dyn Any + Send + Sync>, Failure> {
        self.map(envelope, tenant)
            .map(|e| Box::new(e) as Box<dyn Any + Send + Sync>)
    }

    fn schema(&self, backend: Backend) -> Migrations {
        ConsumerLogic::schema(self, backend)
    }

    fn write_erased<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        backend: Backend,
        envelopes: &'a [&'a Envelope],
        effects: Effects,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let mut typed = Vec::with_capacity(effects.len());
            for (envelope, effect) in envelopes.iter().zip(effects) {
                let effect =
                    effect
                        .downcast::<C::Effect>()
                        .map_err(|_| StoreError::EffectType {
                            consumer: ConsumerLogic::name(self),
                        })?;
                typed.push((*envelope, *effect));
            }
            self.write(conn, backend, &typed).await
        })
    }
}
