//! Criterion: the workload generator (`ledgerflow_loadgen::Workload`), the producer side of
//! every benchmark and of `ledgerflow produce`: events generated per second with W1's shape
//! (100 Zipf-skewed tenants, duplicates and out-of-order arrivals included).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledgerflow_loadgen::{Workload, WorkloadConfig};

const EVENTS: u64 = 20_000;

fn bench_loadgen(c: &mut Criterion) {
    let mut group = c.benchmark_group("loadgen");
    group.throughput(Throughput::Elements(EVENTS));
    for (name, duplicates, out_of_order) in [("w1_plain", 0.0, 0.0), ("w1_dup_ooo", 0.05, 0.05)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let workload = Workload::new(WorkloadConfig {
                    tenants: 100,
                    events: EVENTS,
                    duplicates,
                    out_of_order,
                    seed: 42,
                    ..WorkloadConfig::default()
                })
                .expect("workload");
                let mut n = 0u64;
                for event in workload {
                    n += black_box(event.event.event_id_raw().len()) as u64;
                }
                assert!(n > 0);
                n
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_loadgen);
criterion_main!(benches);
