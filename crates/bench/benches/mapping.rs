//! Criterion: erp-receivables journal mapping (`ledgerflow_erp_receivables::map_event`) over a
//! W1-like mix of the event types it handles (invoices, payments, credit memos, customers).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledgerflow_core::{Coordinates, Envelope, SchemaId};
use ledgerflow_erp_receivables::{ErpReceivables, map_event};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use ledgerflow_store::ErasedConsumer;
use ledgerflow_tenants::{AccountMapping, TenantConfig};

fn tenant_config(
    id: &ledgerflow_core::TenantId,
    currency: ledgerflow_core::Currency,
) -> TenantConfig {
    TenantConfig {
        tenant_id: id.clone(),
        legal_entity: format!("{id} Inc."),
        functional_currency: currency,
        erp: None,
        accounts: AccountMapping {
            receivable: "1200".to_owned(),
            revenue_default: "4000".to_owned(),
            revenue_by_family: BTreeMap::from([("usage".to_owned(), "4010".to_owned())]),
            tax_payable: "2200".to_owned(),
            cash_clearing: "1010".to_owned(),
            payment_fees: "6150".to_owned(),
            unapplied_cash: "2400".to_owned(),
        },
        webhooks: Vec::new(),
        rate_limit_per_sec: None,
    }
}

fn bench_mapping(c: &mut Criterion) {
    let workload = Workload::new(WorkloadConfig {
        tenants: 100,
        events: 5_000,
        duplicates: 0.0,
        seed: 42,
        ..WorkloadConfig::default()
    })
    .expect("workload");
    let tenants: BTreeMap<String, TenantConfig> = workload
        .tenants()
        .iter()
        .map(|t| {
            (
                t.tenant_id.to_string(),
                tenant_config(&t.tenant_id, t.currency),
            )
        })
        .collect();
    let consumer = ErpReceivables;
    let inputs: Vec<(Envelope, &TenantConfig)> = workload
        .enumerate()
        .filter(|(_, g)| consumer.handles(g.event.event_type()))
        .map(|(i, g)| {
            let meta = g.event.validate().expect("generated events are valid");
            let tenant = &tenants[g.tenant_id.as_str()];
            let coordinates = Coordinates {
                topic: "bench".to_owned(),
                partition: 0,
                offset: i as i64,
            };
            (
                Envelope::new(meta, g.event, SchemaId(1), coordinates),
                tenant,
            )
        })
        .collect();
    let mut group = c.benchmark_group("erp_mapping");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("map_event_mix", |b| {
        b.iter(|| {
            for (envelope, tenant) in &inputs {
                black_box(map_event(black_box(envelope), tenant).expect("maps"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_mapping);
criterion_main!(benches);
