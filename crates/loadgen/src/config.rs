//! The workload configuration and the crate's error type.

/// Most tenants one workload may simulate. Every tenant gets a profile and a state slot up
/// front, so the bound keeps a typo (`--tenants 4000000000`) from exhausting memory.
const MAX_TENANTS: u32 = 1_000_000;

/// Default Zipf exponent of the tenant skew: with 100 tenants the busiest one gets ~20% of the
/// events and the median one ~0.3%.
const DEFAULT_ZIPF_EXPONENT: f64 = 1.1;

/// Errors of the workload generator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LoadgenError {
    /// The tenant count is zero or absurdly large.
    #[error("tenants must be between 1 and {max}, got {got}")]
    TenantCount {
        /// The configured count.
        got: u32,
        /// The largest accepted count.
        max: u32,
    },
    /// A fraction or exponent is outside its range (or not a number).
    #[error("{field} must be in {range}, got {value}")]
    OutOfRange {
        /// The config field.
        field: &'static str,
        /// The accepted range, in interval notation.
        range: &'static str,
        /// The configured value.
        value: f64,
    },
    /// A manifest total is not an exact decimal string.
    #[error("invalid decimal total {0:?}")]
    InvalidDecimal(String),
}

/// What to generate. Build it with struct update syntax over [`Default`]:
///
/// ```
/// use ledgerflow_loadgen::WorkloadConfig;
/// let cfg = WorkloadConfig { tenants: 20, events: 10_000, duplicates: 0.05, ..Default::default() };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Number of tenants, `t001`..`tNNN`.
    pub tenants: u32,
    /// Number of items the iterator yields, duplicates included.
    pub events: u64,
    /// Fraction of items that are exact re-sends of an earlier distinct event (sent again at
    /// most 1,000 items after the original), in `[0, 1)`.
    pub duplicates: f64,
    /// Seed of the ChaCha8 generator; the same config always yields the same sequence.
    pub seed: u64,
    /// Exponent of the Zipf distribution over tenants, finite and `>= 0` (0 is uniform).
    pub zipf_exponent: f64,
    /// Fraction of payments emitted immediately before the invoice they pay, in `[0, 1]`.
    pub out_of_order: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            tenants: 10,
            events: 1_000,
            duplicates: 0.0,
            seed: 0,
            zipf_exponent: DEFAULT_ZIPF_EXPONENT,
            out_of_order: 0.0,
        }
    }
}

impl WorkloadConfig {
    /// Checks every field's range. `NaN` is rejected everywhere.
    pub fn validate(&self) -> Result<(), LoadgenError> {
        if self.tenants == 0 || self.tenants > MAX_TENANTS {
            return Err(LoadgenError::TenantCount {
                got: self.tenants,
                max: MAX_TENANTS,
            });
        }
        // Written as negated "inside" checks so that NaN (which compares false) is rejected.
        if !(self.duplicates >= 0.0 && self.duplicates < 1.0) {
            return Err(LoadgenError::OutOfRange {
                field: "duplicates",
                range: "[0, 1)",
                value: self.duplicates,
            });
        }
        if !(self.out_of_order >= 0.0 && self.out_of_order <= 1.0) {
            return Err(LoadgenError::OutOfRange {
                field: "out_of_order",
                range: "[0, 1]",
                value: self.out_of_order,
            });
        }
        if !(self.zipf_exponent >= 0.0 && self.zipf_exponent.is_finite()) {
            return Err(LoadgenError::OutOfRange {
                field: "zipf_exponent",
                range: "[0, inf)",
                value: self.zipf_exponent,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cfg = WorkloadConfig::default();
        assert_eq!(cfg.zipf_exponent, 1.1);
        assert_eq!(cfg.out_of_order, 0.0);
        cfg.validate().unwrap();
    }

    #[test]
    fn out_of_range_fields_are_rejected_with_lowercase_messages() {
        let ok = WorkloadConfig::default();
        let cases = [
            WorkloadConfig {
                tenants: 0,
                ..ok.clone()
            },
            WorkloadConfig {
                tenants: MAX_TENANTS + 1,
                ..ok.clone()
            },
            WorkloadConfig {
                duplicates: 1.0,
                ..ok.clone()
            },
            WorkloadConfig {
                duplicates: -0.1,
                ..ok.clone()
            },
            WorkloadConfig {
                duplicates: f64::NAN,
                ..ok.clone()
            },
            WorkloadConfig {
                out_of_order: 1.5,
                ..ok.clone()
            },
            WorkloadConfig {
                out_of_order: f64::NAN,
                ..ok.clone()
            },
            WorkloadConfig {
                zipf_exponent: -1.0,
                ..ok.clone()
            },
            WorkloadConfig {
                zipf_exponent: f64::INFINITY,
                ..ok.clone()
            },
        ];
        for cfg in cases {
            let err = cfg.validate().unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
        assert_eq!(
            WorkloadConfig {
                duplicates: 2.0,
                ..ok.clone()
            }
            .validate()
            .unwrap_err()
            .to_string(),
            "duplicates must be in [0, 1), got 2"
        );
        WorkloadConfig {
            out_of_order: 1.0,
            zipf_exponent: 0.0,
            ..ok
        }
        .validate()
        .unwrap();
    }
}
