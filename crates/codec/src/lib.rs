//! ledgerflow-codec: Confluent wire format, a schema registry client with a lock-free
//! resolution cache, and Avro <-> typed events.
//!
//! Every failure is a [`CodecError`] whose [`CodecError::failure`] says whether to retry
//! (registry unreachable) or dead-letter with a reason code (everything about the bytes).

pub mod contracts;
mod decoder;
mod encoder;
mod error;
mod frame;
mod registry_client;

pub use decoder::{Decoded, Decoder, DecoderConfig, ResolvedSchema, default_max_message_bytes};
pub use encoder::{Encoder, describe, encode_body};
pub use error::CodecError;
pub use frame::{Frame, HEADER_LEN, MAGIC_BYTE, encode_frame};
/// Re-exported so the decoder's callers render its errors with the same helper.
pub use ledgerflow_core::error_chain;
pub use registry_client::{RegisteredSchema, RegistryAuth, RegistryClient, auth_vars};
