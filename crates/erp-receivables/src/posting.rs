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
    fn states_round_trip() {
        for s in PostingState::ALL {
            assert_eq!(PostingState::parse(s.as_str()), Some(s));
        }
        assert_eq!(PostingState::parse("acked"), None);
    }
}
