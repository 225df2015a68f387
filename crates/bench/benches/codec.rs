//! Criterion: decoding one Confluent-framed W1 event with the schema resolution cached, the
//! path every record takes once its writer schema id has been seen.
//!
//! `decoder_decode` goes through [`Decoder::decode`] exactly as the consumer does (frame check,
//! cache lookup, Avro decode with writer/reader resolution, typed event, validation) against a
//! ledgerflow registry served in-process; the cache is warmed first, so no request is made while
//! measuring. `decode_body` is the Avro part alone, on a [`ResolvedSchema`].

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledgerflow_codec::{
    Decoder, DecoderConfig, Encoder, Frame, RegistryClient, ResolvedSchema, contracts,
};
use ledgerflow_loadgen::{Workload, WorkloadConfig};
use ledgerflow_registry::{RegistryConfig, connect, serve};

/// 1,000 W1-like events (every type, both writer versions), framed.
fn framed_events(encoder: &Encoder) -> Vec<Vec<u8>> {
    Workload::new(WorkloadConfig {
        tenants: 100,
        events: 1_000,
        duplicates: 0.0,
        seed: 42,
        ..WorkloadConfig::default()
    })
    .expect("workload")
    .map(|g| encoder.encode(&g.event, g.writer_version).expect("encodes"))
    .collect()
}

fn bench_codec(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("registry.db").display()
    );
    let (decoder, encoder, values) = rt.block_on(async {
        let state = connect(&RegistryConfig { database_url })
            .await
            .expect("registry database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(serve(listener, state, std::future::pending()));
        let client = RegistryClient::new(&url, Duration::from_secs(10)).expect("client");
        let encoder = Encoder::register(&client, "bench.codec")
            .await
            .expect("register");
        let values = framed_events(&encoder);
        let decoder = Decoder::new(client, DecoderConfig::default());
        for v in &values {
            decoder.decode(v).await.expect("decodes");
        }
        (decoder, encoder, values)
    });
    let mean = values.iter().map(Vec::len).sum::<usize>() as f64 / values.len() as f64;
    eprintln!("{} events, mean framed size {mean:.0} bytes", values.len());

    let mut group = c.benchmark_group("codec_decode");
    group.throughput(Throughput::Elements(values.len() as u64));
    group.bench_function("decoder_decode_cached", |b| {
        b.iter(|| {
            rt.block_on(async {
                for v in &values {
                    black_box(decoder.decode(black_box(v)).await.expect("decodes"));
                }
            })
        })
    });

    // The Avro part alone: resolved schemas by id, built once from the shipped contracts.
    let resolved: HashMap<u32, ResolvedSchema> = contracts::CONTRACTS
        .iter()
        .filter_map(|c| {
            let id = encoder.schema_id(c.event_type, c.version)?;
            Some((id.0, ResolvedSchema::new(id, c.text).expect("resolves")))
        })
        .collect();
    group.bench_function("resolved_decode_body", |b| {
        b.iter(|| {
            for v in &values {
                let frame = Frame::parse(black_box(v), usize::MAX).expect("frame");
                let schema = &resolved[&frame.schema_id.0];
                black_box(schema.decode_body(frame.body).expect("decodes"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
