//! W3C trace context: an event produced with a `traceparent` header is processed in a span that
//! continues the producer's trace, and the span reaches an OTLP/HTTP collector.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use ledgerflow_e2e::{EventProducer, RawRecord, Stack, generate};

const TOPIC: &str = "e2e.trace";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// A collector that stores every request body it receives and answers 200.
fn collector() -> (u16, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = header.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    store.lock().expect("bodies").push(body);
                    let out = reader.get_mut();
                    // The exporter may have hung up; the bodies are what the test reads.
                    out.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                    ).ok();
                }
            });
        }
    });
    (port, bodies)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_producers_traceparent_is_continued_into_the_exported_spans() {
    let stack = Stack::start();
    stack.create_topic(TOPIC, 1);
    let tenants = stack.path("tenants.toml");
    stack.write_tenants_file(2, &tenants);
    let producer = EventProducer::new(&stack, TOPIC);
    let (items, _) = generate(2, 20, 0.0, 3);
    let event = &items[0].event;
    let tenant = event.tenant_id_raw().to_owned();
    producer.send_raw(RawRecord {
        key: Some(tenant.clone().into_bytes()),
        value: Some(producer.encode(event, 1)),
        headers: vec![
            ("tenant_id".to_owned(), tenant),
            (
                "traceparent".to_owned(),
                format!("00-{TRACE_ID}-{PARENT_ID}-01"),
            ),
        ],
        partition: None,
    });

    let (port, bodies) = collector();
    let db = format!("sqlite://{}", stack.path("ledger.db"));
    let out = stack
        .command(&[
            "run",
            "--consumer",
            "erp-receivables",
            "--tenants",
            &tenants,
            "--database",
            &db,
            "--topic",
            TOPIC,
            "--exit-when-idle",
            "3s",
        ])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bodies = bodies.lock().expect("bodies");
    assert!(!bodies.is_empty(), "no OTLP export reached the collector");
    let all: Vec<u8> = bodies.iter().flatten().copied().collect();
    // OTLP protobuf carries ids as raw bytes: the event span has the producer's trace id and
    // the producer's span id as its parent.
    assert!(
        contains(&all, &unhex(TRACE_ID)),
        "the exported spans do not continue trace {TRACE_ID}"
    );
    assert!(
        contains(&all, &unhex(PARENT_ID)),
        "no exported span has the producer's span {PARENT_ID} as parent"
    );
    assert!(contains(&all, b"event"), "an `event` span was exported");
}
