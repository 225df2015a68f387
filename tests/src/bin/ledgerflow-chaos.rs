//! `ledgerflow-chaos`: the chaos suite on a 3-broker Kafka cluster (see `ledgerflow_e2e::chaos`).
//!
//! ```text
//! ledgerflow-chaos [--seed N] [--profile short|full] [--scenario NAME ...] [--out DIR]
//! ```
//!
//! Prints the seed and every fault as it happens, writes the report to `DIR/<date>.md`
//! (default `chaos/results`), and exits 1 when an invariant does not hold. `make chaos` runs it
//! with the release binary; `CHAOS_SEED` and `CHAOS_SCENARIO` replay one scenario of a run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ledgerflow_e2e::chaos::{self, Kind, Profile};

const USAGE: &str = "usage: ledgerflow-chaos [--seed N] [--profile short|full] \
                     [--scenario NAME ...] [--out DIR]\n\
                     scenarios: malformed registry kills rebalance-classic rebalance-kip848 \
                     brokers postgres erp combined (default: all)";

fn main() -> ExitCode {
    let mut seed = None;
    let mut profile = Profile::Full;
    let mut kinds = Vec::new();
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../chaos/results"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| args.next();
        match arg.as_str() {
            "--seed" => match value(&mut args).and_then(|v| v.parse().ok()) {
                Some(s) => seed = Some(s),
                None => return usage("--seed takes a number"),
            },
            "--profile" => match value(&mut args).as_deref().and_then(Profile::parse) {
                Some(p) => profile = p,
                None => return usage("--profile is short or full"),
            },
            "--scenario" => match value(&mut args).as_deref().and_then(Kind::parse) {
                Some(k) => kinds.push(k),
                None => return usage("unknown scenario"),
            },
            "--out" => match value(&mut args) {
                Some(dir) => out = PathBuf::from(dir),
                None => return usage("--out takes a directory"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    if kinds.is_empty() {
        kinds = Kind::ALL.to_vec();
    }
    let seed = seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    println!(
        "chaos seed {seed}, profile {profile:?}, scenarios {:?}",
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>()
    );
    let started = Instant::now();
    let reports = chaos::run(&kinds, seed, profile);
    let text = chaos::markdown(&reports, seed, profile, started.elapsed());
    let path = chaos::write_report(&out, &text);
    println!("report: {}", path.display());
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.invariants.hold())
        .map(|r| r.kind.name())
        .collect();
    if failed.is_empty() {
        println!("every invariant held in {} scenarios", reports.len());
        ExitCode::SUCCESS
    } else {
        println!(
            "invariants FAILED in: {} (replay: --seed {seed} --scenario NAME)",
            failed.join(", ")
        );
        ExitCode::FAILURE
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("{problem}\n{USAGE}");
    ExitCode::from(2)
}
