//! Confluent wire format: `[0x00][schema id: u32 big-endian][Avro binary body]`.
//!
//! Every length is checked before any byte is read, so a crafted or truncated value is rejected
//! with a reason code instead of a panic or an oversized allocation.

use ledgerflow_core::SchemaId;

use crate::CodecError;

/// The magic byte of the Confluent wire format.
pub const MAGIC_BYTE: u8 = 0;

/// Length of the Confluent header (magic byte + 4-byte schema id).
pub const HEADER_LEN: usize = 5;

/// A value split into its schema id and Avro body, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Schema id from the header.
    pub schema_id: SchemaId,
    /// Avro binary body after the header.
    pub body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Splits a Confluent-framed value. `max_len` bounds the whole value.
    pub fn parse(value: &'a [u8], max_len: usize) -> Result<Self, CodecError> {
        if value.len() > max_len {
            return Err(CodecError::TooLarge {
                len: value.len(),
                max: max_len,
            });
        }
        let Some((header, body)) = value.split_first_chunk::<HEADER_LEN>() else {
            return Err(CodecError::TruncatedHeader { len: value.len() });
        };
        if header[0] != MAGIC_BYTE {
            return Err(CodecError::UnsupportedMagic { found: header[0] });
        }
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        Ok(Self {
            schema_id: SchemaId(id),
            body,
        })
    }
}

/// Prefixes an Avro body with the Confluent header.
pub fn encode_frame(schema_id: SchemaId, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.0.to_be_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_header_and_body() {
        let framed = encode_frame(SchemaId(0x0102_0304), b"abc");
        assert_eq!(framed[..5], [0, 1, 2, 3, 4]);
        let frame = Frame::parse(&framed, 1024).unwrap();
        assert_eq!(frame.schema_id, SchemaId(0x0102_0304));
        assert_eq!(frame.body, b"abc");
    }

    #[test]
    fn rejects_short_wrong_magic_and_oversized_values() {
        for len in 0..HEADER_LEN {
            let value = vec![0u8; len];
            assert!(matches!(
                Frame::parse(&value, 1024),
                Err(CodecError::TruncatedHeader { len: l }) if l == len
            ));
        }
        assert!(matches!(
            Frame::parse(&[1, 0, 0, 0, 1, 2], 1024),
            Err(CodecError::UnsupportedMagic { found: 1 })
        ));
        assert!(matches!(
            Frame::parse(&[0; 11], 10),
            Err(CodecError::TooLarge { len: 11, max: 10 })
        ));
        // A header with an empty body is a valid frame; the Avro decoder judges the body.
        assert!(Frame::parse(&[0, 0, 0, 0, 7], 10).unwrap().body.is_empty());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            match Frame::parse(&bytes, 48) {
                Ok(frame) => prop_assert_eq!(encode_frame(frame.schema_id, frame.body), bytes),
                Err(e) => prop_assert!(e.failure().reason().is_some()),
            }
        }
    }
}
