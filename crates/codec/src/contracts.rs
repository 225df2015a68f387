//! The event contracts from `schemas/`, compiled into the binary.
//!
//! The newest version of each type is ledgerflow's reader schema; every version is a writer
//! schema the producer can register and use.

use std::sync::LazyLock;

use apache_avro::Schema;
use ledgerflow_core::EventType;

/// One versioned contract file.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// Event type.
    pub event_type: EventType,
    /// Contract version (1, 2, ...).
    pub version: u8,
    /// The `.avsc` text as shipped in `schemas/`.
    pub text: &'static str,
}

/// Every contract version, oldest first within a type.
pub const CONTRACTS: &[Contract] = &[
    Contract {
        event_type: EventType::CustomerUpserted,
        version: 1,
        text: include_str!("../../../schemas/v1/customer_upserted.avsc"),
    },
    Contract {
        event_type: EventType::SubscriptionActivated,
        version: 1,
        text: include_str!("../../../schemas/v1/subscription_activated.avsc"),
    },
    Contract {
        event_type: EventType::SubscriptionCanceled,
        version: 1,
        text: include_str!("../../../schemas/v1/subscription_canceled.avsc"),
    },
    Contract {
        event_type: EventType::UsageAggregated,
        version: 1,
        text: include_str!("../../../schemas/v1/usage_aggregated.avsc"),
    },
    Contract {
        event_type: EventType::InvoiceFinalized,
        version: 1,
        text: include_str!("../../../schemas/v1/invoice_finalized.avsc"),
    },
    Contract {
        event_type: EventType::InvoiceFinalized,
        version: 2,
        text: include_str!("../../../schemas/v2/invoice_finalized.avsc"),
    },
    Contract {
        event_type: EventType::PaymentCaptured,
        version: 1,
        text: include_str!("../../../schemas/v1/payment_captured.avsc"),
    },
    Contract {
        event_type: EventType::PaymentCaptured,
        version: 2,
        text: include_str!("../../../schemas/v2/payment_captured.avsc"),
    },
    Contract {
        event_type: EventType::CreditMemoIssued,
        version: 1,
        text: include_str!("../../../schemas/v1/credit_memo_issued.avsc"),
    },
    Contract {
        event_type: EventType::InvoiceVoided,
        version: 1,
        text: include_str!("../../../schemas/v1/invoice_voided.avsc"),
    },
    Contract {
        event_type: EventType::PaymentRefunded,
        version: 1,
        text: include_str!("../../../schemas/v1/payment_refunded.avsc"),
    },
];

/// A parsed contract. Parsed once per process and kept for its lifetime, so decoders and
/// encoders can borrow the schemas for `'static`.
#[derive(Debug)]
pub struct ParsedContract {
    /// Which contract.
    pub contract: Contract,
    /// Parsed schema.
    pub schema: Schema,
}

static PARSED: LazyLock<Vec<ParsedContract>> = LazyLock::new(|| {
    CONTRACTS
        .iter()
        .map(|c| ParsedContract {
            contract: *c,
            // The files are part of the build and covered by tests; a parse failure here is a
            // broken build, not bad input.
            schema: Schema::parse_str(c.text).unwrap_or_else(|e| {
                panic!(
                    "shipped contract {} v{} does not parse: {e}",
                    c.event_type, c.version
                )
            }),
        })
        .collect()
});

/// All parsed contracts.
pub fn parsed() -> &'static [ParsedContract] {
    &PARSED
}

/// The writer contract of a type and version.
pub fn writer(event_type: EventType, version: u8) -> Option<&'static ParsedContract> {
    parsed()
        .iter()
        .find(|p| p.contract.event_type == event_type && p.contract.version == version)
}

/// The reader contract of a type: its newest version.
pub fn reader(event_type: EventType) -> &'static ParsedContract {
    parsed()
        .iter()
        .filter(|p| p.contract.event_type == event_type)
        .max_by_key(|p| p.contract.version)
        .unwrap_or_else(|| panic!("no contract shipped for {event_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema_compatibility::SchemaCompatibility;

    #[test]
    fn every_event_type_has_a_contract_whose_name_matches() {
        for t in EventType::ALL {
            let r = reader(t);
            match &r.schema {
                Schema::Record(rec) => assert_eq!(rec.name.fullname(None), t.full_name()),
                other => panic!("{t} contract is not a record: {other:?}"),
            }
        }
    }

    #[test]
    fn every_older_version_is_readable_by_the_reader_schema() {
        for p in parsed() {
            let r = reader(p.contract.event_type);
            SchemaCompatibility::can_read(&p.schema, &r.schema).unwrap_or_else(|e| {
                panic!(
                    "{} v{} not readable: {e}",
                    p.contract.event_type, p.contract.version
                )
            });
        }
    }

    #[test]
    fn money_and_quantities_are_never_floating_point() {
        for c in CONTRACTS {
            assert!(
                !c.text.contains("\"float\""),
                "{} v{}",
                c.event_type,
                c.version
            );
            assert!(
                !c.text.contains("\"double\""),
                "{} v{}",
                c.event_type,
                c.version
            );
        }
    }
}
