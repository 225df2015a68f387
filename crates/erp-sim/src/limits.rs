//! Per-account load: requests in flight, the highest concurrency ever observed, and the ERPs'
//! own limits. NetSuite's concurrency governance is one limit for the whole account, shared by
//! every integration and credential, and a request over it is rejected at once (never queued).
//! D365's service protection limits answer 429 with Retry-After. S/4HANA and Fusion publish no
//! per-request limit we could verify, so their load is only observed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::{Erp, now_ms};

/// Limits in force; changed at start (CLI) or at runtime (`POST /_sim/limits`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimitConfig {
    /// NetSuite account concurrency limit (all credentials of the account together).
    pub netsuite_concurrency: u32,
    /// D365 concurrent requests per account before 429 (the documented user-based limit is 52).
    pub d365_concurrency: u32,
    /// D365 requests per account per 300-second window before 429; 0 = no window limit.
    pub d365_requests_per_window: u32,
    /// Per-account overrides of the concurrency limit, keyed `erp/account`.
    #[serde(default)]
    pub account_concurrency: BTreeMap<String, u32>,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            netsuite_concurrency: 5,
            d365_concurrency: 52,
            d365_requests_per_window: 0,
            account_concurrency: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Load {
    in_flight: u32,
    max_seen: u32,
    window_start_ms: u64,
    window_count: u32,
}

#[derive(Debug, Default)]
struct Inner {
    config: LimitConfig,
    load: HashMap<(Erp, String), Load>,
}

/// Shared limit state.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    inner: Arc<Mutex<Inner>>,
}

/// Why a request was refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Seconds the client should wait, where the ERP says so.
    pub retry_after: Option<u64>,
}

/// A request in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct InFlight {
    inner: Arc<Mutex<Inner>>,
    slot: (Erp, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(load) = inner.load.get_mut(&self.slot) {
            load.in_flight = load.in_flight.saturating_sub(1);
        }
    }
}

const D365_WINDOW_MS: u64 = 300_000;

impl Limits {
    /// Limits with the given configuration.
    pub fn new(config: LimitConfig) -> Limits {
        Limits {
            inner: Arc::new(Mutex::new(Inner {
                config,
                load: HashMap::new(),
            })),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> LimitConfig {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .config
            .clone()
    }

    /// Replaces the configuration.
    pub fn set_config(&self, config: LimitConfig) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).config = config;
    }

    /// Admits a request or refuses it at once. The check and the increment happen under one
    /// lock, so the observed concurrency can never exceed the limit.
    pub fn enter(&self, erp: Erp, account: &str) -> Result<InFlight, Refused> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let override_key = format!("{erp}/{account}");
        let limit = inner
            .config
            .account_concurrency
            .get(&override_key)
            .copied()
            .or(match erp {
                Erp::NetSuite => Some(inner.config.netsuite_concurrency),
                Erp::D365 => Some(inner.config.d365_concurrency),
                Erp::S4Hana | Erp::Fusion => None,
            });
        let window_limit = inner.config.d365_requests_per_window;
        let slot = (erp, account.to_owned());
        let load = inner.load.entry(slot.clone()).or_default();
        if let Some(limit) = limit.filter(|&l| l > 0)
            && load.in_flight >= limit
        {
            // NetSuite documents no Retry-After for concurrency rejections; D365 sends one.
            let retry_after = (erp == Erp::D365).then_some(1);
            return Err(Refused { retry_after });
        }
        if erp == Erp::D365 && window_limit > 0 {
            let now = now_ms();
            if now.saturating_sub(load.window_start_ms) >= D365_WINDOW_MS {
                load.window_start_ms = now;
                load.window_count = 0;
            }
            if load.window_count >= window_limit {
                let left_ms = D365_WINDOW_MS.saturating_sub(now - load.window_start_ms);
                return Err(Refused {
                    retry_after: Some(left_ms.div_ceil(1000).max(1)),
                });
            }
            load.window_count += 1;
        }
        load.in_flight += 1;
        load.max_seen = load.max_seen.max(load.in_flight);
        Ok(InFlight {
            inner: Arc::clone(&self.inner),
            slot,
        })
    }

    /// (in flight, max observed) per (erp, account).
    pub fn snapshot(&self) -> BTreeMap<(Erp, String), (u32, u32)> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .load
            .iter()
            .map(|(k, v)| (k.clone(), (v.in_flight, v.max_seen)))
            .collect()
    }
}
