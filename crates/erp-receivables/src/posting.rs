//! A posting: one `erp_outbox` row, the unit the dispatcher delivers and an operator sees.
//!
//! A posting is written in the batch transaction with its journal, already rendered for its
//! ERP (the adapter's [`crate::adapter::ErpAdapter::render`]), and moves through these states
//! (the `status` column):
//!
//! ```text
//!   pending ──send──> confirmed            (the ERP returned the document id)
//!      │  └──send──> accepted ──poll──> confirmed
//!      │                 └────poll────> failed
//!      ├──retry (timeout, connection, throttled, server, auth)──> pending (next_attempt_at)
//!      └──failed (client, rejected, mapping, auth; or retries exhausted)──> failed
//!   failed ──operator──> resolved
//! ```
//!
//! A posting is `confirmed` only when the ERP says the document exists: a synchronous create
//! that answered with its id, a job the adapter polled to success, or a lookup by external id
//! that found it.

use std::fmt;

use ledgerflow_core::EventId;
use ledgerflow_tenants::{AccountLimits, ErpKind, ErpTarget};
use serde::{Deserialize, Serialize};

use crate::journal::JournalKind;

/// The visible state of a posting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostingState {
    /// Waiting for its (next) attempt.
    Pending,
    /// An asynchronous job was submitted; the dispatcher polls it.
    Accepted,
    /// The ERP holds the document (`erp_document_id`).
    Confirmed,
    /// Parked for an operator: a permanent error, or retries exhausted.
    Failed,
    /// A failed posting an operator settled (posted by hand, or decided not to post).
    Resolved,
}

impl PostingState {
    /// Every state.
    pub const ALL: [PostingState; 5] = [
        Self::Pending,
        Self::Accepted,
        Self::Confirmed,
        Self::Failed,
        Self::Resolved,
    ];

    /// The `status` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
            Self::Resolved => "resolved",
        }
    }

    /// Parses a `status` column value.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for PostingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Short codes of the journal kinds inside external ids (kept short: some ERPs limit the key's
/// length, and the code only has to tell the journals of one event apart).
fn kind_code(kind: JournalKind) -> &'static str {
    match kind {
        JournalKind::Invoice => "inv",
        JournalKind::Receipt => "rct",
        JournalKind::Application => "app",
        JournalKind::CreditMemo => "cm",
        JournalKind::InvoiceVoid => "void",
        JournalKind::Refund => "rfd",
    }
}

/// The external id of the document a journal becomes in the ERP:
/// `lf-{tenant}-{event id}-{inv|rct|app|cm|void|rfd}`.
///
/// It depends only on the tenant, the causing event and the journal's role, so a replay, a
/// re-derivation or a re-send always produces the same one, and it uses only letters, digits
/// and `-` (tenant ids are `[a-z0-9_-]`, event ids are hyphenated UUIDs), which NetSuite
/// requires of external ids and every other ERP accepts in its reference fields.
pub fn external_id(tenant: &str, event_id: &EventId, kind: JournalKind) -> String {
    format!("lf-{tenant}-{event_id}-{}", kind_code(kind))
}

/// Where an ERP keeps ledgerflow's key of a document (the value the adapter creates the
/// document with and looks it up by), and how many characters that field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyField {
    /// The ERP's field.
    pub field: &'static str,
    /// Its documented length; `None`: no limit ledgerflow's external ids can reach.
    pub max_len: Option<usize>,
}

/// The key field of each ERP (see ADAPTERS.md, "Keys in the ERP", for the sources):
///
/// | ERP | field | length |
/// | --- | --- | --- |
/// | NetSuite | `externalId` (the `eid:` of the URL) | not limited for ledgerflow's ids |
/// | Dynamics 365 | journal header `Description` (LedgerJournalTable.Name, EDT `Description`) | 60 |
/// | S/4HANA | `OriginalReferenceDocument` (the reference key, BKPF-AWKEY) | 20 |
/// | Oracle Fusion | AutoInvoice `INTERFACE_LINE_ATTRIBUTE1` (line transaction flexfield) | 30 |
/// | | journal import `REFERENCE4` / `REFERENCE1` (journal and batch name) | 100 |
///
/// Fusion has two fields; [`KeyField`] names the shorter one, and GL journals and AutoInvoice
/// transactions carry the same (compact) key.
pub fn key_field(kind: ErpKind) -> KeyField {
    match kind {
        ErpKind::Netsuite => KeyField {
            field: "externalId",
            max_len: None,
        },
        ErpKind::Dynamics365 => KeyField {
            field: "Description",
            max_len: Some(60),
        },
        ErpKind::S4hana => KeyField {
            field: "OriginalReferenceDocument",
            max_len: Some(20),
        },
        ErpKind::OracleFusion => KeyField {
            field: "INTERFACE_LINE_ATTRIBUTE1",
            max_len: Some(30),
        },
    }
}

/// Length of a [`compact_key`]: `LF` and 18 base32 characters.
pub const COMPACT_KEY_LEN: usize = 20;

/// Domain separation of the compact key's hash. Fixed forever: a change re-keys every document
/// in S/4HANA and Fusion, and a re-send after it would post a second copy.
const COMPACT_KEY_DOMAIN: &[u8] = b"ledgerflow/erp-key/v1\n";

/// RFC 4648 base32 alphabet (upper case, no padding): letters and digits only, so the key is
/// valid wherever the external id is, and no two characters look alike.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The compact key of an external id, for ERPs whose key field is shorter than the external
/// id: `LF` followed by the first 18 base32 characters (90 bits) of
/// SHA-256(`ledgerflow/erp-key/v1\n` ‖ external id). 20 characters: it fits S/4HANA's
/// 20-character reference key and Fusion's 30-character flexfield segment (and the first 25
/// characters, all that Oracle's journal import is documented to keep of a given journal name).
///
/// The external id is `lf-{tenant}-{event id}-{role}` with a fixed-length event id and a
/// role suffix without `-`, so it encodes (tenant, event, role) injectively: hashing it is
/// hashing those three. The key depends on nothing else (no time, no attempt, no release
/// setting), so a replay, a re-derivation, a re-send and a later release all produce the same
/// one (pinned by a golden test).
///
/// **Collisions.** Two different postings get the same key with probability 2^-90 (SHA-256
/// truncated to 90 bits is, as far as anyone knows, uniform). Among n postings of one ERP
/// account the chance that *any* two collide is at most n(n-1)/2 · 2^-90 ≈ n² / 2.5·10^27: for
/// a billion postings (10^9) about 4·10^-10, for ten billion 4·10^-8. A collision would make
/// the lookup before a create find the other posting's document and skip the create, so the
/// bound is the probability of that silent skip over the account's whole history.
/// Compact keys start with `LF` and contain no `-`, so none equals a full external id
/// (`lf-...`): an ERP that holds both kinds (D365 for long tenant names) cannot confuse them.
pub fn compact_key(external_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(COMPACT_KEY_DOMAIN);
    hasher.update(external_id.as_bytes());
    let digest = hasher.finalize();
    let mut key = String::with_capacity(COMPACT_KEY_LEN);
    key.push_str("LF");
    // 5 bits per character, most significant first.
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in digest.iter() {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 && key.len() < COMPACT_KEY_LEN {
            bits -= 5;
            key.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
        if key.len() == COMPACT_KEY_LEN {
            break;
        }
    }
    key
}

/// The key a posting's document carries in its ERP ([`key_field`]): the external id itself
/// where it fits the field, else its [`compact_key`]. Adapters create, look up (before a
/// create, after an indefinite outcome) and read back by this key; the outbox keeps the full
/// external id.
pub fn erp_key(kind: ErpKind, external_id: &str) -> String {
    match key_field(kind).max_len {
        Some(max) if external_id.len() > max => compact_key(external_id),
        _ => external_id.to_owned(),
    }
}

/// The postings a journal waits for because of its kind: a void's reversal waits for the
/// voided invoice's posting (the ERP must hold the original before its reversal arrives).
/// Every adapter adds these to what its own documents need.
pub(crate) fn kind_dependencies(input: &crate::adapter::RenderInput<'_>) -> Vec<String> {
    match (input.journal.kind, input.invoice.and_then(|i| i.event_id)) {
        (JournalKind::InvoiceVoid, Some(invoice)) => {
            vec![
                input
                    .posting_of(&invoice, JournalKind::Invoice)
                    .0
                    .to_string(),
            ]
        }
        _ => Vec::new(),
    }
}

/// Whether `id` is usable as an external id everywhere: non-empty, letters, digits, `_`, `-`.
pub fn is_portable_external_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a posting goes and how, copied from the tenant's configuration when the posting was
/// rendered and stored with it (the `route` column), so a delivery never depends on the
/// tenants file of the process that delivers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The tenant's ERP route (kind, account, base URL, mode, auth references, mapping).
    pub target: ErpTarget,
    /// The account's limits at render time.
    pub limits: AccountLimits,
    /// The tenant's own delivery rate (`rate_limit_per_sec`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_rate_per_sec: Option<u32>,
}

impl Route {
    /// The ERP kind.
    pub fn kind(&self) -> ErpKind {
        self.target.kind
    }

    /// The ERP account id.
    pub fn account(&self) -> &str {
        &self.target.account
    }

    /// The base URL without a trailing slash.
    pub fn base_url(&self) -> &str {
        self.target.base_url.trim_end_matches('/')
    }
}

/// A posting another one waits for (an invoice before the payment applied to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Its outbox id.
    pub id: String,
    /// The journal role of the posting it waits for.
    pub journal_kind: JournalKind,
    /// Its document kind in the ERP.
    pub document_kind: String,
    /// Its external id.
    pub external_id: String,
    /// The ERP's id of its document, once confirmed.
    pub erp_document_id: Option<String>,
}

/// One claimed posting, as an adapter sees it.
#[derive(Debug, Clone)]
pub struct ErpPosting {
    /// Outbox id (the journal id).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The journal.
    pub journal_id: String,
    /// The journal's role.
    pub journal_kind: JournalKind,
    /// What the adapter creates in the ERP (its own names: `journalEntry`, `invoice`,
    /// `LedgerJournal`, ...).
    pub document_kind: String,
    /// The stable external id ([`external_id`]).
    pub external_id: String,
    /// The rendered document.
    pub document: serde_json::Value,
    /// Where it goes.
    pub route: Route,
    /// Fingerprint of the tenant configuration it was rendered with.
    pub config_version: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The asynchronous job of an `accepted` posting.
    pub job_ref: Option<String>,
    /// Whether the last attempt may have reached the ERP without an answer: this attempt must
    /// ask the ERP (the adapter's `find`) before sending again.
    pub indefinite: bool,
    /// Postings this one waits for, all confirmed or resolved when it is claimed.
    pub dependencies: Vec<Dependency>,
}

impl ErpPosting {
    /// The key of its document in its ERP ([`erp_key`]).
    pub fn erp_key(&self) -> String {
        erp_key(self.route.kind(), &self.external_id)
    }

    /// The dependency for a journal role, if there is one.
    pub fn dependency(&self, kind: JournalKind) -> Option<&Dependency> {
        self.dependencies.iter().find(|d| d.journal_kind == kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_stable_portable_and_distinct_per_role() {
        let event = EventId::parse("6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f").unwrap();
        let ids: Vec<String> = JournalKind::ALL
            .into_iter()
            .map(|k| external_id("t_01-x", &event, k))
            .collect();
        assert_eq!(
            ids[0], "lf-t_01-x-6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f-inv",
            "pinned: a change would re-key every posting"
        );
        for id in &ids {
            assert!(is_portable_external_id(id), "{id}");
            assert_eq!(
                id,
                &external_id("t_01-x", &event, JournalKind::parse(&id_kind(id)).unwrap())
            );
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), JournalKind::ALL.len());
        assert_eq!(
            ids[4], "lf-t_01-x-6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f-void",
            "pinned"
        );
        assert_eq!(ids[5], "lf-t_01-x-6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f-rfd");
        assert!(!is_portable_external_id("lf-a b"));
        assert!(!is_portable_external_id("lf-a.b"));
        assert!(!is_portable_external_id(""));
    }

    fn id_kind(id: &str) -> String {
        match id.rsplit('-').next().unwrap() {
            "inv" => "invoice",
            "rct" => "receipt",
            "app" => "application",
            "void" => "invoice_void",
            "rfd" => "refund",
            _ => "credit_memo",
        }
        .to_owned()
    }

    #[test]
    fn erp_keys_are_pinned_fit_their_fields_and_keep_the_full_id_where_it_fits() {
        let event = EventId::parse("6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f").unwrap();
        let inv = external_id("acme", &event, JournalKind::Invoice);
        let rct = external_id("acme", &event, JournalKind::Receipt);
        // Golden values: a change re-keys every S/4HANA and Fusion document, and a re-send
        // after it would post a second copy. Never update these (they are RFC 4648 base32 of
        // SHA-256, computed independently with Python's hashlib and base64).
        assert_eq!(compact_key(&inv), "LFMSM6GHOVPJCFVSXVFQ");
        assert_eq!(compact_key(&rct), "LFUVDIVGRY4GKDRY2TTJ");
        assert_eq!(
            compact_key("lf-t_01-x-6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f-void"),
            "LF5K4LSGIZKL4CT7D7VJ"
        );
        for kind in ErpKind::ALL {
            let key = erp_key(kind, &inv);
            assert!(is_portable_external_id(&key), "{kind}: {key}");
            if let Some(max) = key_field(kind).max_len {
                assert!(key.len() <= max, "{kind}: {key}");
            }
        }
        assert_eq!(erp_key(ErpKind::Netsuite, &inv), inv);
        assert_eq!(erp_key(ErpKind::Dynamics365, &inv), inv, "fits 60");
        assert_eq!(erp_key(ErpKind::S4hana, &inv), compact_key(&inv));
        assert_eq!(erp_key(ErpKind::OracleFusion, &inv), compact_key(&inv));
        let long_tenant = "t".repeat(30);
        let long = external_id(&long_tenant, &event, JournalKind::Invoice);
        assert!(long.len() > 60);
        assert_eq!(erp_key(ErpKind::Dynamics365, &long), compact_key(&long));
        assert_eq!(erp_key(ErpKind::Netsuite, &long), long);
        // Distinct per role and tenant; never a full id's shape.
        let keys: std::collections::BTreeSet<String> = JournalKind::ALL
            .into_iter()
            .flat_map(|k| ["acme", "acme2"].map(|t| compact_key(&external_id(t, &event, k))))
            .collect();
        assert_eq!(keys.len(), 2 * JournalKind::ALL.len());
        assert!(
            keys.iter()
                .all(|k| k.len() == COMPACT_KEY_LEN && k.starts_with("LF") && !k.contains('-'))
        );
    }

    #[test]
    fn states_round_trip() {
        for s in PostingState::ALL {
            assert_eq!(PostingState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PostingState::parse("acked"), None);
    }
}
