//! The retry schedule of a paused partition: the workspace's one exponential backoff with
//! jitter ([`ledgerflow_core::Backoff`]), walked one failed attempt at a time.

pub use ledgerflow_core::Attempts as Backoff;
