//! Fault injection. With probability `rate` an admitted ERP request gets one fault, drawn from a
//! ChaCha8 generator seeded with `--seed`, so a run with the same seed and the same request order
//! sees the same faults. Kinds:
//! - `5xx`: the ERP's own 500/503 answer, nothing stored;
//! - `429`: a throttling answer (with Retry-After where the ERP sends one), nothing stored;
//! - `slow`: the request is held `slow_ms` before it is processed normally;
//! - `drop`: the request is processed and committed, then the connection is closed without an
//!   answer, so the client sees a connection error for a write that did happen.
//!
//! Separately an ERP can be taken "down" for N seconds: every request to it answers 503.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::store::{Erp, now_ms};

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FaultKind {
    /// ERP 5xx answer.
    #[serde(rename = "5xx")]
    ServerError,
    /// 429 answer.
    #[serde(rename = "429")]
    Throttle,
    /// Delay, then normal processing.
    #[serde(rename = "slow")]
    Slow,
    /// Commit, then close the connection without an answer.
    #[serde(rename = "drop")]
    Drop,
}

impl FaultKind {
    /// All kinds.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::ServerError,
        FaultKind::Throttle,
        FaultKind::Slow,
        FaultKind::Drop,
    ];

    /// The name used in the API and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::ServerError => "5xx",
            FaultKind::Throttle => "429",
            FaultKind::Slow => "slow",
            FaultKind::Drop => "drop",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name.trim())
    }
}

fn default_kinds() -> Vec<FaultKind> {
    FaultKind::ALL.to_vec()
}

fn default_slow_ms() -> u64 {
    1500
}

/// The fault configuration in force.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability in [0, 1] that an admitted request gets a fault.
    #[serde(default)]
    pub rate: f64,
    /// Kinds to draw from (uniformly).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<FaultKind>,
    /// Only this ERP (all when absent).
    #[serde(default)]
    pub erp: Option<Erp>,
    /// Only this account (all when absent).
    #[serde(default)]
    pub account: Option<String>,
    /// Delay of a `slow` fault.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
    /// Reseeds the generator when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.0,
            kinds: default_kinds(),
            erp: None,
            account: None,
            slow_ms: default_slow_ms(),
            seed: None,
        }
    }
}

/// Fault state.
#[derive(Debug)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    rng: Mutex<ChaCha8Rng>,
    down_until: Mutex<HashMap<Erp, u64>>,
}

impl Faults {
    /// Faults with a configuration and seed.
    pub fn new(config: FaultConfig, seed: u64) -> Faults {
        Faults {
            config: Mutex::new(config),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            down_until: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> FaultConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the configuration (and reseeds when it carries a seed).
    pub fn set_config(&self, config: FaultConfig) {
        if let Some(seed) = config.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = ChaCha8Rng::seed_from_u64(seed);
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// Draws the fault (if any) for one admitted request.
    pub fn draw(&self, erp: Erp, account: &str) -> Option<FaultKind> {
        let config = self
            .config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if config.rate <= 0.0 || config.kinds.is_empty() {
            return None;
        }
        if config.erp.is_some_and(|e| e != erp)
            || config.account.as_deref().is_some_and(|a| a != account)
        {
            return None;
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if rng.random::<f64>() >= config.rate {
            return None;
        }
        let pick = rng.random_range(0..config.kinds.len());
        config.kinds.get(pick).copied()
    }

    /// The configured delay of a `slow` fault.
    pub fn slow_ms(&self) -> u64 {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slow_ms
    }

    /// Takes an ERP down for `seconds` (0 brings it back).
    pub fn set_down(&self, erp: Erp, seconds: u64) {
        let mut down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if seconds == 0 {
            down.remove(&erp);
        } else {
            down.insert(erp, now_ms() + seconds * 1000);
        }
    }

    /// Seconds left while the ERP is down.
    pub fn down_for(&self, erp: Erp) -> Option<u64> {
        let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        let until = *down.get(&erp)?;
        let now = now_ms();
        (until > now).then(|| (until - now).div_ceil(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_faults() {
        let config = FaultConfig {
            rate: 0.5,
            ..FaultConfig::default()
        };
        let a = Faults::new(config.clone(), 7);
        let b = Faults::new(config, 7);
        let da: Vec<_> = (0..50).map(|_| a.draw(Erp::NetSuite, "x")).collect();
        let db: Vec<_> = (0..50).map(|_| b.draw(Erp::NetSuite, "x")).collect();
        assert_eq!(da, db);
        assert!(da.iter().any(Option::is_some) && da.iter().any(Option::is_none));
    }

    #[test]
    fn filters_apply() {
        let config = FaultConfig {
            rate: 1.0,
            erp: Some(Erp::D365),
            ..FaultConfig::default()
        };
        let f = Faults::new(config, 1);
        assert!(f.draw(Erp::NetSuite, "x").is_none());
        assert!(f.draw(Erp::D365, "x").is_some());
    }
}
