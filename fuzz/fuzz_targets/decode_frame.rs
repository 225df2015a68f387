//! Fuzzes the consumer's path from a Kafka record value to a typed event, minus the registry:
//! Confluent frame split, then the Avro body decoded with the writer schema the frame's id
//! names. Ids map to the shipped contracts by `id % CONTRACTS.len()`, so every input exercises
//! one of them; the seeds in `fuzz/seeds/decode_frame/` use the same mapping.
//!
//! The invariant is the service's: no input panics (libfuzzer-sys aborts on any panic, even one
//! the decoder catches), every rejection is permanent with a reason code, and whatever decodes
//! passes validation.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use ledgerflow_codec::contracts::CONTRACTS;
use ledgerflow_codec::{
    CodecError, Decoder, DecoderConfig, Frame, RegistryClient, ResolvedSchema,
    default_max_message_bytes,
};
use ledgerflow_core::SchemaId;
use libfuzzer_sys::fuzz_target;

/// Every shipped contract resolved against its reader, built once.
static SCHEMAS: LazyLock<Vec<ResolvedSchema>> = LazyLock::new(|| {
    // Constructing a decoder applies the process-wide Avro allocation bound production runs
    // with (the value size limit); without it a crafted length prefix could make the decoder
    // allocate up to apache-avro's 512 MiB default. It never talks to the registry here.
    let client = RegistryClient::new("http://127.0.0.1:9", Duration::from_secs(1))
        .expect("static registry url");
    drop(Decoder::new(client, DecoderConfig::default()));
    CONTRACTS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = SchemaId(u32::try_from(i).expect("few contracts"));
            ResolvedSchema::new(id, c.text).expect("shipped contracts resolve")
        })
        .collect()
});

fuzz_target!(|value: &[u8]| {
    let schemas = &*SCHEMAS;
    let frame = match Frame::parse(value, default_max_message_bytes()) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(e.failure().reason().is_some(), "{e:?}");
            return;
        }
    };
    let index = usize::try_from(frame.schema_id.0).expect("u32 fits usize") % schemas.len();
    match schemas[index].decode_body(frame.body) {
        Ok(decoded) => assert!(decoded.event.validate().is_ok(), "{decoded:?}"),
        Err(e) => {
            assert!(!matches!(e, CodecError::DecoderPanic { .. }), "{e:?}");
            assert!(e.failure().reason().is_some(), "{e:?}");
        }
    }
});
