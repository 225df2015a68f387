//! Failpoints for crash tests: named places inside commit windows where a test can make the
//! process die as if killed -9 (`std::process::abort`: no destructor, no flush, no goodbye).
//!
//! Off unless `LEDGERFLOW_FAILPOINTS` is set, e.g. `store.before_commit=nth:7` (abort at the
//! seventh hit) or `runtime.before_offset_commit=p:0.01` (abort at each hit with probability
//! 0.01); several entries are separated by commas. The variable is read once; a process without
//! it pays one atomic load per hit. The names in use:
//!
//! - `store.before_commit`: the batch's effect rows, audit rows and position are written, the
//!   transaction is not committed;
//! - `runtime.before_offset_commit`: the batch is committed in the database, the Kafka offset
//!   mirror is not;
//! - `erp.after_send`: an ERP request was sent, its outcome is not recorded.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms failpoints.
pub const FAILPOINTS_ENV: &str = "LEDGERFLOW_FAILPOINTS";

#[derive(Debug)]
enum Trigger {
    /// Abort at the n-th hit (1-based).
    Nth(u64),
    /// Abort at each hit with this probability.
    Probability(f64),
}

#[derive(Debug)]
struct Point {
    trigger: Trigger,
    hits: AtomicU64,
}

fn armed() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(FAILPOINTS_ENV)
            .ok()
            .map(|spec| parse(&spec))
            .unwrap_or_default()
    })
}

fn parse(spec: &str) -> HashMap<String, Point> {
    spec.split(',')
        .filter_map(|entry| {
            let (name, trigger) = entry.trim().split_once('=')?;
            let trigger = if let Some(n) = trigger.strip_prefix("nth:") {
                Trigger::Nth(n.parse().ok()?)
            } else {
                Trigger::Probability(trigger.strip_prefix("p:")?.parse().ok()?)
            };
            Some((
                name.to_owned(),
                Point {
                    trigger,
                    hits: AtomicU64::new(0),
                },
            ))
        })
        .collect()
}

/// Whether this hit of `point` fires.
fn fires(point: &Point) -> bool {
    let hit = point.hits.fetch_add(1, Ordering::Relaxed) + 1;
    match point.trigger {
        Trigger::Nth(n) => hit == n,
        Trigger::Probability(p) => {
            // A cheap, seedless draw: the hit count through a 64-bit mix, good enough to
            // spread aborts over a run.
            let mut x = hit
                .wrapping_add(std::process::id().into())
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x ^= x >> 31;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 29;
            (x as f64 / u64::MAX as f64) < p
        }
    }
}

/// Aborts the process here when the failpoint `name` is armed and fires.
pub fn hit(name: &str) {
    let points = armed();
    if points.is_empty() {
        return;
    }
    if let Some(point) = points.get(name)
        && fires(point)
    {
        eprintln!("failpoint {name} fired: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_fires_once_at_its_hit() {
        let points = parse("a=nth:3, b=p:0");
        let a = &points["a"];
        let fired: Vec<bool> = (0..5).map(|_| fires(a)).collect();
        assert_eq!(fired, vec![false, false, true, false, false]);
        assert!(
            !(0..100).any(|_| fires(&points["b"])),
            "probability 0 never fires"
        );
        assert!(parse("garbage,c=nth:x,d=q:1").is_empty());
    }

    #[test]
    fn probability_one_always_fires() {
        let points = parse("x=p:1.0");
        assert!((0..50).all(|_| fires(&points["x"])));
    }
}
