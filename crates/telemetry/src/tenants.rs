//! Bounded tenant labels. A label per tenant is unbounded cardinality on a multi-tenant
//! platform, so a tenant gets its own label value only when it is on an allowlist
//! (`LEDGERFLOW_METRICS_TENANTS=acme,globex`) or, without one, when it is among the first N
//! tenants this process labels (`top:N`, default 20). Everything else is `other`.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// The environment variable holding the allowlist (`a,b,c`) or `top:N`.
pub const TENANTS_ENV: &str = "LEDGERFLOW_METRICS_TENANTS";
/// The label value every tenant outside the allowlist (or past the first N) is folded into.
pub const OTHER_TENANT: &str = "other";
/// How many tenants get their own label when no allowlist is given.
pub const DEFAULT_TOP_TENANTS: usize = 20;

#[derive(Debug)]
enum Mode {
    Allow(BTreeSet<String>),
    FirstSeen {
        limit: usize,
        seen: Mutex<BTreeSet<String>>,
    },
}

/// Maps tenant ids to bounded label values.
#[derive(Debug)]
pub struct TenantLabels {
    mode: Mode,
}

impl TenantLabels {
    /// Only these tenants get their own label.
    pub fn allowlist<I, S>(tenants: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            mode: Mode::Allow(tenants.into_iter().map(Into::into).collect()),
        }
    }

    /// The first `limit` distinct tenants labelled get their own label, for the life of the
    /// process (so a series never changes its label value).
    pub fn first_seen(limit: usize) -> Self {
        Self {
            mode: Mode::FirstSeen {
                limit,
                seen: Mutex::new(BTreeSet::new()),
            },
        }
    }

    /// From the value of [`TENANTS_ENV`]: unset or blank means `top:20`; `top:N` the first N;
    /// anything else a comma separated allowlist.
    pub fn from_setting(value: Option<&str>) -> Result<Self, String> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() {
            return Ok(Self::first_seen(DEFAULT_TOP_TENANTS));
        }
        if let Some(n) = value.strip_prefix("top:") {
            let limit = n
                .trim()
                .parse()
                .map_err(|_| format!("{TENANTS_ENV}: {value:?} is not top:N"))?;
            return Ok(Self::first_seen(limit));
        }
        Ok(Self::allowlist(
            value
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        ))
    }

    /// From the process environment (see [`TenantLabels::from_setting`]).
    pub fn from_env() -> Result<Self, String> {
        Self::from_setting(std::env::var(TENANTS_ENV).ok().as_deref())
    }

    /// The label value for a tenant: its id, or [`OTHER_TENANT`].
    pub fn label(&self, tenant: &str) -> String {
        let own = match &self.mode {
            Mode::Allow(allowed) => allowed.contains(tenant),
            Mode::FirstSeen { limit, seen } => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.contains(tenant) {
                    true
                } else if seen.len() < *limit {
                    seen.insert(tenant.to_owned());
                    true
                } else {
                    false
                }
            }
        };
        if own {
            tenant.to_owned()
        } else {
            OTHER_TENANT.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_folds_everyone_else() {
        let labels = TenantLabels::from_setting(Some(" acme, globex ,,")).unwrap();
        assert_eq!(labels.label("acme"), "acme");
        assert_eq!(labels.label("globex"), "globex");
        assert_eq!(labels.label("initech"), OTHER_TENANT);
        assert_eq!(labels.label("ACME"), OTHER_TENANT);
    }

    #[test]
    fn first_seen_keeps_the_first_n_for_good() {
        let labels = TenantLabels::from_setting(Some("top:2")).unwrap();
        assert_eq!(labels.label("t1"), "t1");
        assert_eq!(labels.label("t2"), "t2");
        assert_eq!(labels.label("t3"), OTHER_TENANT);
        // Seen tenants keep their label; latecomers never displace them.
        assert_eq!(labels.label("t1"), "t1");
        assert_eq!(labels.label("t3"), OTHER_TENANT);
    }

    #[test]
    fn cardinality_is_bounded() {
        let labels = TenantLabels::first_seen(5);
        let distinct: BTreeSet<String> =
            (0..1000).map(|i| labels.label(&format!("t{i}"))).collect();
        assert_eq!(distinct.len(), 6, "{distinct:?}");
        assert!(distinct.contains(OTHER_TENANT));
    }

    #[test]
    fn default_and_bad_settings() {
        let labels = TenantLabels::from_setting(None).unwrap();
        for i in 0..DEFAULT_TOP_TENANTS {
            assert_eq!(labels.label(&format!("t{i}")), format!("t{i}"));
        }
        assert_eq!(labels.label("late"), OTHER_TENANT);
        assert!(TenantLabels::from_setting(Some("top:x")).is_err());
        let none = TenantLabels::from_setting(Some("top:0")).unwrap();
        assert_eq!(none.label("acme"), OTHER_TENANT);
    }
}
