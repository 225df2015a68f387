//! ledgerflow-service: the composition root.
//!
//! Everything between the command line and the library crates: the validated [`Settings`]
//! (flags over an explicit [`Environment`] over the TOML file over defaults), which consumers
//! exist and what each brings along ([`ConsumerKind`]: logic, schema, companions, gauges),
//! [`serve`] (what `ledgerflow run` does), the metrics sampler and `/readyz`, the one base of
//! every Kafka client outside the consumer loops ([`KafkaClient`]), and the operator
//! operations in [`ops`], each returning a report struct. The binary parses arguments and
//! renders these reports; nothing here prints.

pub mod companion;
pub mod config;
mod consumer;
mod error;
mod kafka;
pub mod ops;
mod pipeline;
pub mod produce;
mod sampler;
mod serve;
pub mod signal;
pub mod tenant_lag;

pub use config::{Environment, Settings, SettingsLayer};
pub use consumer::{ConsumerKind, Gauge, Spec};
pub use error::ServiceError;
pub use kafka::{KafkaClient, METADATA_TIMEOUT, partitions};
pub use pipeline::{Pipeline, open_store};
pub use serve::{ConsumerFailure, ForcedExit, ServeReport, serve};
