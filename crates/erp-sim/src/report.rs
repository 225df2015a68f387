//! Counters and the `GET /_sim/report` document. Document and duplicate figures are computed from
//! the store (so they survive a restart); request, auth, throttling and fault counters are kept
//! in memory for the life of the process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{Value, json};

use crate::faults::FaultKind;
use crate::limits::Limits;
use crate::store::{DuplicateKey, Erp, Store};

/// Counters of one (erp, account).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// ERP requests received (token endpoints included).
    pub requests: u64,
    /// Requests refused for missing or wrong credentials.
    pub rejected_auth: u64,
    /// 429 answers sent (limits and injected faults).
    pub throttled: u64,
    /// 503 answers sent while the ERP was taken down.
    pub down: u64,
    /// Injected faults by kind.
    pub faults: BTreeMap<String, u64>,
}

/// All counters.
#[derive(Debug, Default)]
pub struct Report {
    counters: Mutex<BTreeMap<(Erp, String), Counters>>,
}

impl Report {
    fn bump(&self, erp: Erp, account: &str, f: impl FnOnce(&mut Counters)) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        f(counters.entry((erp, account.to_owned())).or_default());
    }

    /// Counts a request.
    pub fn request(&self, erp: Erp, account: &str) {
        self.bump(erp, account, |c| c.requests += 1);
    }

    /// Counts an authentication rejection.
    pub fn rejected_auth(&self, erp: Erp, account: &str) {
        self.bump(erp, account, |c| c.rejected_auth += 1);
    }

    /// Counts a 429 answer.
    pub fn throttled(&self, erp: Erp, account: &str) {
        self.bump(erp, account, |c| c.throttled += 1);
    }

    /// Counts a 503 while down.
    pub fn down(&self, erp: Erp, account: &str) {
        self.bump(erp, account, |c| c.down += 1);
    }

    /// Counts an injected fault.
    pub fn fault(&self, erp: Erp, account: &str, kind: FaultKind) {
        self.bump(erp, account, |c| {
            *c.faults.entry(kind.as_str().to_owned()).or_default() += 1
        });
    }

    /// Builds the report document.
    pub fn render(&self, store: &Store, limits: &Limits) -> Value {
        let counters = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let dups = store.dup_stats();
        let load = limits.snapshot();
        let mut slots: Vec<(Erp, String)> = counters.keys().cloned().collect();
        slots.extend(dups.keys().cloned());
        slots.extend(load.keys().cloned());
        slots.sort();
        slots.dedup();

        #[derive(Default)]
        struct Sum {
            documents: u64,
            duplicates: u64,
            requests: u64,
            rejected_auth: u64,
            throttled: u64,
            down: u64,
            max_concurrency: u32,
            faults: BTreeMap<String, u64>,
        }
        impl Sum {
            fn to_json(&self) -> Value {
                let mut faults: BTreeMap<String, u64> = FaultKind::ALL
                    .iter()
                    .map(|k| (k.as_str().to_owned(), 0))
                    .collect();
                for (k, v) in &self.faults {
                    *faults.entry(k.clone()).or_default() += v;
                }
                let total: u64 = faults.values().sum();
                json!({
                    "documents": self.documents,
                    "duplicates": self.duplicates,
                    "requests": self.requests,
                    "rejected_auth": self.rejected_auth,
                    "throttled": self.throttled,
                    "down": self.down,
                    "max_concurrency_per_account": self.max_concurrency,
                    "faults": faults,
                    "faults_total": total,
                })
            }
            fn add(&mut self, other: &Sum) {
                self.documents += other.documents;
                self.duplicates += other.duplicates;
                self.requests += other.requests;
                self.rejected_auth += other.rejected_auth;
                self.throttled += other.throttled;
                self.down += other.down;
                self.max_concurrency = self.max_concurrency.max(other.max_concurrency);
                for (k, v) in &other.faults {
                    *self.faults.entry(k.clone()).or_default() += v;
                }
            }
        }

        let mut total = Sum::default();
        let mut per_erp: BTreeMap<Erp, Sum> =
            Erp::ALL.into_iter().map(|e| (e, Sum::default())).collect();
        let mut accounts = Vec::new();
        let mut duplicate_keys: Vec<Value> = Vec::new();
        for slot in slots {
            let c = counters.get(&slot).cloned().unwrap_or_default();
            let d = dups.get(&slot).cloned().unwrap_or_default();
            let (in_flight, max_seen) = load.get(&slot).copied().unwrap_or((0, 0));
            let sum = Sum {
                documents: d.documents,
                duplicates: d.duplicates,
                requests: c.requests,
                rejected_auth: c.rejected_auth,
                throttled: c.throttled,
                down: c.down,
                max_concurrency: max_seen,
                faults: c.faults.clone(),
            };
            let mut row = sum.to_json();
            if let Value::Object(map) = &mut row {
                map.insert("erp".into(), json!(slot.0));
                map.insert("account".into(), json!(slot.1));
                map.insert("in_flight".into(), json!(in_flight));
                map.insert("max_concurrency".into(), json!(max_seen));
            }
            accounts.push(row);
            for DuplicateKey { key, documents } in d.keys {
                duplicate_keys.push(json!({
                    "erp": slot.0, "account": slot.1, "key": key, "documents": documents,
                }));
            }
            if let Some(e) = per_erp.get_mut(&slot.0) {
                e.add(&sum);
            }
            total.add(&sum);
        }
        let mut out = total.to_json();
        if let Value::Object(map) = &mut out {
            let erps: serde_json::Map<String, Value> = per_erp
                .iter()
                .map(|(e, s)| (e.as_str().to_owned(), s.to_json()))
                .collect();
            map.insert("erps".into(), Value::Object(erps));
            map.insert("accounts".into(), Value::Array(accounts));
            map.insert("duplicate_keys".into(), Value::Array(duplicate_keys));
        }
        out
    }
}
