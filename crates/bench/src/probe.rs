//! What the operating system and Postgres say about a run: CPU seconds per process from
//! `/proc/<pid>/stat`, peak resident memory from `/proc/<pid>/status`, and WAL written from
//! `pg_current_wal_lsn()`.
//!
//! Postgres CPU is the sum over every process of the local cluster (postmaster, backends,
//! checkpointer, WAL writer, ...) plus what the postmaster has reaped from exited children
//! (`cutime`/`cstime`), so a backend that exits between two samples is still counted. The
//! cluster is shared with whatever else uses it on this machine; the report says so.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::Serialize;
use sqlx::PgConnection;

/// Clock ticks per second (`getconf CLK_TCK`, 100 on every Linux this runs on).
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// `(comm, ppid, utime + stime, cutime + cstime)` of a process, in ticks.
fn stat(pid: u32) -> Option<(String, u32, u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may contain spaces: split after the last ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    // After comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ppid = u32::try_from(num(1)?).ok()?;
    Some((comm, ppid, num(11)? + num(12)?, num(13)? + num(14)?))
}

/// CPU seconds a process has used so far (its own threads, not its children).
pub(crate) fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    stat(pid).map_or(0.0, |(_, _, own, _)| own as f64 / ticks)
}

/// CPU seconds of the local Postgres cluster: every `postgres` process plus the children the
/// postmaster has reaped.
pub(crate) fn postgres_cpu_seconds(ticks: f64) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0u64;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((comm, ppid, own, reaped)) = stat(pid) else {
            continue;
        };
        if comm != "postgres" {
            continue;
        }
        total += own;
        let parent_is_postgres = stat(ppid).is_some_and(|(c, ..)| c == "postgres");
        if !parent_is_postgres {
            // The postmaster: its reaped children are backends that already exited.
            total += reaped;
        }
    }
    total as f64 / ticks
}

/// Peak resident set size (`VmHWM`) of a process, in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_field(format!("/proc/{pid}/status"), "VmHWM:")
}

fn status_field(path: impl AsRef<Path>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The cluster's current WAL insert position, as text (`0/1A2B3C4D`).
pub(crate) async fn wal_lsn(conn: &mut PgConnection) -> anyhow::Result<String> {
    sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
        .fetch_one(conn)
        .await
        .context("reading pg_current_wal_lsn()")
}

/// Bytes of WAL between two positions.
pub(crate) async fn wal_bytes(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
) -> anyhow::Result<i64> {
    sqlx::query_scalar::<_, i64>("SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::bigint")
        .bind(from)
        .bind(to)
        .fetch_one(conn)
        .await
        .context("pg_wal_lsn_diff")
}

/// CPU seconds by process group over one measured interval.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CpuSplit {
    /// The consumer: the `ledgerflow` process, or the harness itself for B0, B2, B3 and B4.
    pub(crate) consumer: f64,
    /// Every process of the Postgres cluster.
    pub(crate) postgres: f64,
    /// The broker: the JVM of the single Kafka node.
    pub(crate) broker: f64,
}

impl CpuSplit {
    /// Per 1,000 events.
    pub(crate) fn per_thousand(self, events: u64) -> Self {
        let k = (events.max(1)) as f64 / 1000.0;
        Self {
            consumer: self.consumer / k,
            postgres: self.postgres / k,
            broker: self.broker / k,
        }
    }
}

/// A CPU sample of the three process groups; subtract two to get a [`CpuSplit`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    consumer: f64,
    postgres: f64,
    broker: f64,
}

impl CpuSample {
    /// Samples `consumer` (a pid), Postgres and the broker now.
    pub(crate) fn take(consumer: u32, broker: u32, ticks: f64) -> Self {
        Self {
            consumer: cpu_seconds(consumer, ticks),
            postgres: postgres_cpu_seconds(ticks),
            broker: cpu_seconds(broker, ticks),
        }
    }

    /// CPU used between `earlier` and `self`. A consumer that started after `earlier` was taken
    /// is measured from zero, as it should be.
    pub(crate) fn since(self, earlier: Self) -> CpuSplit {
        CpuSplit {
            consumer: (self.consumer - earlier.consumer).max(0.0),
            postgres: (self.postgres - earlier.postgres).max(0.0),
            broker: (self.broker - earlier.broker).max(0.0),
        }
    }

    /// A sample whose consumer part is zero (for a process started after it).
    pub(crate) fn without_consumer(mut self) -> Self {
        self.consumer = 0.0;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat_and_status() {
        let ticks = clock_ticks();
        assert!(ticks > 0.0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(std::process::id(), ticks) > 0.0);
        assert!(peak_rss_kib(std::process::id()).unwrap() > 0);
    }
}
