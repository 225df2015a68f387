//! The short profile of the chaos suite (`make chaos` runs the full one): on a 3-node Kafka
//! cluster, every kind of bad record mixed into a flowing stream, and ledgerflow killed -9
//! mid-run and aborted at failpoints inside its commit windows (the batch transaction, the
//! Kafka offset mirror, and an ERP request sent but its outcome not recorded), while the
//! tenants post to the ERP simulator with 10% injected faults; then the ledger and the ERPs
//! are counted (see `ledgerflow_e2e::chaos`). `CHAOS_SEED` replays a schedule; the seed is
//! printed.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ledgerflow_e2e::chaos::{self, Kind, Profile};

#[test]
fn bad_records_and_kills_inside_commit_windows_leave_an_exact_ledger() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let started = Instant::now();
    let reports = chaos::run(&[Kind::Malformed, Kind::Kills], seed, Profile::Short);
    let text = chaos::markdown(&reports, seed, Profile::Short, started.elapsed());
    eprintln!("{text}");
    for report in &reports {
        assert!(
            report.invariants.hold(),
            "scenario {} (seed {seed}; replay with CHAOS_SEED={seed}):\n{text}",
            report.kind.name()
        );
        // The ERP columns are counted, not n/a.
        assert_eq!(report.invariants.duplicate_erp_documents, Some(0), "{text}");
        assert_eq!(report.invariants.postings_not_confirmed, Some(0), "{text}");
    }
    let malformed = reports
        .iter()
        .find(|r| r.kind == Kind::Malformed)
        .expect("the malformed scenario ran");
    assert!(
        malformed.notes.iter().any(|n| n
            .split_whitespace()
            .next()
            .and_then(|k| k.parse::<u32>().ok())
            .is_some_and(|k| k >= 27)),
        "at least 27 kinds of bad records: {:?}",
        malformed.notes
    );
    let kills = reports
        .iter()
        .find(|r| r.kind == Kind::Kills)
        .expect("the kills scenario ran");
    assert!(
        kills.schedule.iter().any(|e| e
            .what
            .contains("aborted itself at failpoint erp.after_send")),
        "the erp.after_send failpoint fired: {text}"
    );
}
