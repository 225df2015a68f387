//! The manifest: what a workload sent, for reconciliation against the consumer's ledger.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ledgerflow_core::{Currency, Event, EventType, TenantId, format_minor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{GeneratedEvent, LoadgenError, TenantProfile};

/// Most fractional digits a [`DecimalTotal`] accepts when parsed (ISO 4217 uses at most 4).
const MAX_EXPONENT: usize = 18;

/// What a workload sent: counts and exact money totals, overall and per tenant.
///
/// This is a contract: the CLI writes it next to a `produce` run and other tools reconcile the
/// consumer's ledger against it. Counts and totals cover **distinct** events only, so
/// duplicates change nothing but `events_sent` and `duplicates_sent`. Maps are `BTreeMap`s, so
/// the JSON is deterministic; every event type appears in every `events` map (0 allowed).
///
/// ```json
/// {
///   "seed": 42,
///   "events_sent": 1000,             // items sent, duplicates included
///   "distinct_events": 950,
///   "duplicates_sent": 50,           // events_sent = distinct_events + duplicates_sent
///   "event_types": {"customer_upserted": 48, "invoice_finalized": 200, ...},
///   "tenants": {
///     "t001": {
///       "currency": "USD",           // functional currency; all totals below are in it
///       "events": {"customer_upserted": 3, "invoice_finalized": 10, ...},
///       "invoices":     {"count": 10, "total": "1234.56"},  // sum of total_minor
///       "payments":     {"count": 8, "total": "1000.00", "fees": "23.10"},  // amount_minor, fee_minor
///       "credit_memos": {"count": 1, "total": "12.34"}      // sum of total_minor (net + tax)
///     }
///   }
/// }
/// ```
///
/// Totals are exact decimal strings with the currency's exponent (`"1500"` for JPY, `"1.250"`
/// for KWD), as written by [`ledgerflow_core::format_minor`]. Event type keys are in the order
/// of [`EventType::ALL`], tenant keys in lexicographic order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Seed of the workload.
    pub seed: u64,
    /// Items sent, duplicates included.
    pub events_sent: u64,
    /// Distinct events sent.
    pub distinct_events: u64,
    /// Duplicates sent.
    pub duplicates_sent: u64,
    /// Distinct events per type, all tenants.
    pub event_types: BTreeMap<EventType, u64>,
    /// Per tenant.
    pub tenants: BTreeMap<TenantId, TenantManifest>,
}

/// One tenant's part of the [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantManifest {
    /// Functional currency of every total.
    pub currency: Currency,
    /// Distinct events per type.
    pub events: BTreeMap<EventType, u64>,
    /// Distinct `invoice_finalized`: count and sum of `total_minor`.
    pub invoices: DocumentTotals,
    /// Distinct `payment_captured`: count, sum of `amount_minor` and of `fee_minor`.
    pub payments: PaymentTotals,
    /// Distinct `credit_memo_issued`: count and sum of `total_minor`.
    pub credit_memos: DocumentTotals,
}

/// Count and total of one kind of document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentTotals {
    /// Number of documents.
    pub count: u64,
    /// Sum of their totals.
    pub total: DecimalTotal,
}

/// Count, total and fees of payments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentTotals {
    /// Number of payments.
    pub count: u64,
    /// Sum of the gross amounts.
    pub total: DecimalTotal,
    /// Sum of the processor fees.
    pub fees: DecimalTotal,
}

/// An exact sum of minor units, written in JSON as a decimal string with `exponent` fractional
/// digits (`"1234.56"`). Parsing takes the exponent from the number of fractional digits, so a
/// value round-trips exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecimalTotal {
    /// Amount in minor units.
    pub minor: i128,
    /// Digits after the decimal point (the currency exponent).
    pub exponent: u8,
}

impl DecimalTotal {
    /// Zero with the exponent of `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self {
            minor: 0,
            exponent: currency.exponent(),
        }
    }
}

impl fmt::Display for DecimalTotal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minor(self.minor, self.exponent))
    }
}

impl FromStr for DecimalTotal {
    type Err = LoadgenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || LoadgenError::InvalidDecimal(s.to_owned());
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let digits_ok = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_ok(whole)
            || !digits_ok(fraction)
            || (unsigned.contains('.') && fraction.is_empty())
            || fraction.len() > MAX_EXPONENT
        {
            return Err(invalid());
        }
        let magnitude: i128 = format!("{whole}{fraction}")
            .parse()
            .map_err(|_| invalid())?;
        let minor = if s.starts_with('-') {
            -magnitude
        } else {
            magnitude
        };
        Ok(Self {
            minor,
            exponent: fraction.len() as u8,
        })
    }
}

impl Serialize for DecimalTotal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DecimalTotal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn zero_counts() -> BTreeMap<EventType, u64> {
    EventType::ALL.into_iter().map(|t| (t, 0)).collect()
}

impl TenantManifest {
    fn new(currency: Currency) -> Self {
        let zero = DocumentTotals {
            count: 0,
            total: DecimalTotal::zero(currency),
        };
        Self {
            currency,
            events: zero_counts(),
            invoices: zero,
            payments: PaymentTotals {
                count: 0,
                total: DecimalTotal::zero(currency),
                fees: DecimalTotal::zero(currency),
            },
            credit_memos: zero,
        }
    }
}

/// The currency an event's amounts are in, when it has one.
fn event_currency(event: &Event) -> Option<Currency> {
    let code = match event {
        Event::CustomerUpserted(e) => &e.currency,
        Event::SubscriptionActivated(e) => &e.currency,
        Event::InvoiceFinalized(e) => &e.currency,
        Event::PaymentCaptured(e) => &e.currency,
        Event::CreditMemoIssued(e) => &e.currency,
        Event::PaymentRefunded(e) => &e.currency,
        Event::SubscriptionCanceled(_) | Event::UsageAggregated(_) | Event::InvoiceVoided(_) => {
            return None;
        }
    };
    Currency::parse(code).ok()
}

impl Manifest {
    /// An empty manifest listing every tenant with zero counts.
    pub fn new(tenants: &[TenantProfile], seed: u64) -> Self {
        Self {
            seed,
            events_sent: 0,
            distinct_events: 0,
            duplicates_sent: 0,
            event_types: zero_counts(),
            tenants: tenants
                .iter()
                .map(|t| (t.tenant_id.clone(), TenantManifest::new(t.currency)))
                .collect(),
        }
    }

    /// Accounts for one sent item. A tenant not given to [`Manifest::new`] is added on first
    /// sight with the currency of that event (USD when the event has none).
    pub fn record(&mut self, ev: &GeneratedEvent) {
        self.events_sent += 1;
        if ev.duplicate {
            self.duplicates_sent += 1;
            return;
        }
        self.distinct_events += 1;
        let kind = ev.event.event_type();
        *self.event_types.entry(kind).or_insert(0) += 1;
        let tenant = self.tenants.entry(ev.tenant_id.clone()).or_insert_with(|| {
            let currency = event_currency(&ev.event)
                .or_else(|| Currency::parse("USD").ok())
                .unwrap_or_else(|| unreachable!("USD is in the currency table"));
            TenantManifest::new(currency)
        });
        *tenant.events.entry(kind).or_insert(0) += 1;
        match &ev.event {
            Event::InvoiceFinalized(e) => {
                tenant.invoices.count += 1;
                tenant.invoices.total.minor += i128::from(e.total_minor);
            }
            Event::PaymentCaptured(e) => {
                tenant.payments.count += 1;
                tenant.payments.total.minor += i128::from(e.amount_minor);
                tenant.payments.fees.minor += i128::from(e.fee_minor);
            }
            Event::CreditMemoIssued(e) => {
                tenant.credit_memos.count += 1;
                tenant.credit_memos.total.minor += i128::from(e.total_minor);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{Workload, WorkloadConfig};

    fn run(cfg: WorkloadConfig) -> (Vec<TenantProfile>, Vec<GeneratedEvent>, Manifest) {
        let workload = Workload::new(cfg.clone()).unwrap();
        let tenants = workload.tenants().to_vec();
        let mut manifest = Manifest::new(&tenants, cfg.seed);
        let events: Vec<_> = workload.collect();
        for ev in &events {
            manifest.record(ev);
        }
        (tenants, events, manifest)
    }

    #[test]
    fn decimal_totals_round_trip_exactly() {
        for (text, minor, exponent) in [
            ("1234.56", 123_456, 2),
            ("1500", 1500, 0),
            ("0.001", 1, 3),
            ("-0.05", -5, 2),
            ("0.00", 0, 2),
        ] {
            let parsed: DecimalTotal = text.parse().unwrap();
            assert_eq!(parsed, DecimalTotal { minor, exponent }, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
        for bad in ["", "-", "1.", ".5", "1.2.3", "12a", "+1", "1e5", " 1"] {
            let err = bad.parse::<DecimalTotal>().unwrap_err();
            assert!(
                err.to_string().starts_with("invalid decimal total"),
                "{bad}"
            );
        }
    }

    /// The totals are recomputed here from the raw events, without `record`, and compared as
    /// the decimal strings another tool would read.
    #[test]
    fn totals_equal_an_independent_recomputation() {
        let cfg = WorkloadConfig {
            tenants: 12,
            events: 30_000,
            duplicates: 0.1,
            seed: 7,
            out_of_order: 0.2,
            ..Default::default()
        };
        let (tenants, events, manifest) = run(cfg);
        let exponent: HashMap<&str, u8> = tenants
            .iter()
            .map(|t| (t.tenant_id.as_str(), t.currency.exponent()))
            .collect();

        #[derive(Default)]
        struct Sums {
            invoices: (u64, i128),
            payments: (u64, i128, i128),
            memos: (u64, i128),
            per_type: HashMap<&'static str, u64>,
        }
        let mut seen = std::collections::HashSet::new();
        let mut sums: HashMap<String, Sums> = HashMap::new();
        let mut duplicates = 0;
        for ev in &events {
            // Distinct by event id, independent of the `duplicate` flag.
            if !seen.insert(ev.event.event_id_raw().to_owned()) {
                duplicates += 1;
                continue;
            }
            let s = sums.entry(ev.event.tenant_id_raw().to_owned()).or_default();
            *s.per_type
                .entry(ev.event.event_type().as_str())
                .or_default() += 1;
            match &ev.event {
                Event::InvoiceFinalized(e) => {
                    s.invoices.0 += 1;
                    s.invoices.1 += i128::from(e.total_minor);
                }
                Event::PaymentCaptured(e) => {
                    s.payments.0 += 1;
                    s.payments.1 += i128::from(e.amount_minor);
                    s.payments.2 += i128::from(e.fee_minor);
                }
                Event::CreditMemoIssued(e) => {
                    s.memos.0 += 1;
                    s.memos.1 += i128::from(e.total_minor);
                }
                _ => {}
            }
        }
        assert_eq!(manifest.events_sent, 30_000);
        assert_eq!(manifest.duplicates_sent, duplicates);
        assert_eq!(manifest.distinct_events, seen.len() as u64);
        assert!(duplicates > 2_000, "{duplicates}");
        assert_eq!(
            manifest.event_types.values().sum::<u64>(),
            manifest.distinct_events
        );

        let json = serde_json::to_value(&manifest).unwrap();
        for (tenant, s) in &sums {
            let t = &json["tenants"][tenant];
            let exp = exponent[tenant.as_str()];
            assert_eq!(t["invoices"]["count"], s.invoices.0);
            assert_eq!(t["invoices"]["total"], format_minor(s.invoices.1, exp));
            assert_eq!(t["payments"]["count"], s.payments.0);
            assert_eq!(t["payments"]["total"], format_minor(s.payments.1, exp));
            assert_eq!(t["payments"]["fees"], format_minor(s.payments.2, exp));
            assert_eq!(t["credit_memos"]["count"], s.memos.0);
            assert_eq!(t["credit_memos"]["total"], format_minor(s.memos.1, exp));
            for kind in EventType::ALL {
                let expected = s.per_type.get(kind.as_str()).copied().unwrap_or(0);
                assert_eq!(t["events"][kind.as_str()], expected, "{tenant} {kind}");
            }
        }
        // JPY totals carry no fraction, the others their exponent.
        assert_eq!(json["tenants"]["t004"]["currency"], "JPY");
        assert!(
            !json["tenants"]["t004"]["invoices"]["total"]
                .as_str()
                .unwrap()
                .contains('.')
        );
        assert_eq!(json["tenants"]["t008"]["currency"], "KWD");
        let kwd = json["tenants"]["t008"]["payments"]["total"]
            .as_str()
            .unwrap();
        assert_eq!(kwd.split('.').nth(1).map(str::len), Some(3), "{kwd}");
    }

    #[test]
    fn every_tenant_and_type_is_listed_even_when_idle() {
        let (tenants, _, manifest) = run(WorkloadConfig {
            tenants: 40,
            events: 30,
            ..Default::default()
        });
        assert_eq!(manifest.tenants.len(), tenants.len());
        for t in manifest.tenants.values() {
            assert_eq!(t.events.len(), EventType::ALL.len());
        }
        assert_eq!(manifest.event_types.len(), EventType::ALL.len());
        let json = serde_json::to_value(&manifest).unwrap();
        let idle = &json["tenants"]["t039"];
        assert_eq!(idle["currency"], "CHF");
        assert_eq!(idle["invoices"]["total"], "0.00");
        assert_eq!(json["tenants"]["t040"]["payments"]["fees"], "0.000"); // KWD
        assert_eq!(idle["events"]["usage_aggregated"], 0);
    }

    #[test]
    fn json_round_trips_and_has_the_contract_shape() {
        let (_, _, manifest) = run(WorkloadConfig {
            tenants: 5,
            events: 2_000,
            duplicates: 0.05,
            seed: 42,
            ..Default::default()
        });
        let text = serde_json::to_string_pretty(&manifest).unwrap();
        let back: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(serde_json::to_string_pretty(&back).unwrap(), text);

        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["seed"], 42);
        assert_eq!(json["events_sent"], 2_000);
        let sent =
            json["distinct_events"].as_u64().unwrap() + json["duplicates_sent"].as_u64().unwrap();
        assert_eq!(sent, 2_000);
        assert!(json["event_types"]["invoice_finalized"].as_u64().unwrap() > 0);
        let t001 = &json["tenants"]["t001"];
        assert_eq!(t001["currency"], "USD");
        assert!(t001["invoices"]["total"].is_string());
        assert!(t001["payments"]["fees"].is_string());
        assert!(t001["credit_memos"]["count"].is_u64());
        let keys: Vec<_> = json["tenants"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["t001", "t002", "t003", "t004", "t005"]);
    }

    #[test]
    fn duplicates_change_only_the_sent_counters() {
        let (tenants, events, manifest) = run(WorkloadConfig {
            tenants: 3,
            events: 3_000,
            duplicates: 0.2,
            ..Default::default()
        });
        let mut distinct_only = Manifest::new(&tenants, 0);
        for ev in events.iter().filter(|e| !e.duplicate) {
            distinct_only.record(ev);
        }
        assert!(manifest.duplicates_sent > 0);
        assert_eq!(distinct_only.tenants, manifest.tenants);
        assert_eq!(distinct_only.event_types, manifest.event_types);
        assert_eq!(distinct_only.distinct_events, manifest.distinct_events);
        assert_eq!(distinct_only.duplicates_sent, 0);
    }
}
