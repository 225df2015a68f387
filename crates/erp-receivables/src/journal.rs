//! Double-entry journal entries: the unit that is stored, checked and sent to an ERP.
//!
//! Amounts are integer minor units of the entry's single currency. Every entry is checked with
//! [`JournalEntry::check_balanced`] before it leaves the mapping or the application step, and
//! its id is derived from the causing event id and its role ([`journal_id`]), so deriving the
//! same entry twice yields the same id and the database's unique keys catch any second copy.

use std::fmt;

use ledgerflow_core::{Currency, EventId, Failure, ReasonCode, format_minor};
use serde::Serialize;
use sha1::{Digest, Sha1};
use uuid::Uuid;

/// Namespace of every journal id (UUID v5). Fixed forever: changing it would give re-derived
/// journals new ids, and with them new outbox rows.
const JOURNAL_NAMESPACE: Uuid = Uuid::from_u128(0x4c1e_d9e2_5b7a_4f0e_9a61_3c2d_8e7f_a001);

/// Why a journal entry exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalKind {
    /// `invoice_finalized`: Dr receivable, Cr revenue and tax.
    Invoice,
    /// `payment_captured`: Dr cash clearing and fees, Cr unapplied cash.
    Receipt,
    /// A payment applied to its invoice: Dr unapplied cash, Cr receivable.
    Application,
    /// `credit_memo_issued`: Dr revenue and tax, Cr receivable.
    CreditMemo,
    /// `invoice_voided`: the voided invoice's journal with debits and credits swapped (Dr
    /// revenue and tax, Cr receivable), a new compensating document.
    InvoiceVoid,
    /// `payment_refunded`: Dr unapplied cash (amount), Cr cash clearing (amount - fee given
    /// back), Cr payment fees (fee given back).
    Refund,
}

impl JournalKind {
    /// Every kind.
    pub const ALL: [JournalKind; 6] = [
        Self::Invoice,
        Self::Receipt,
        Self::Application,
        Self::CreditMemo,
        Self::InvoiceVoid,
        Self::Refund,
    ];

    /// Stable name, stored in `erp_journal_entries.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::Receipt => "receipt",
            Self::Application => "application",
            Self::CreditMemo => "credit_memo",
            Self::InvoiceVoid => "invoice_void",
            Self::Refund => "refund",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for JournalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deterministic id of the journal an event gives rise to in a role: UUID v5 over
/// `"<event id>/<kind>"`.
pub fn journal_id(event_id: &EventId, kind: JournalKind) -> Uuid {
    let mut hasher = Sha1::new();
    hasher.update(JOURNAL_NAMESPACE.as_bytes());
    hasher.update(format!("{event_id}/{}", kind.as_str()).as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// One line: a debit or a credit (never both) on one account, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalLine {
    /// GL account from the tenant's mapping.
    pub account: String,
    /// Debit in minor units (0 for a credit line).
    pub debit_minor: i64,
    /// Credit in minor units (0 for a debit line).
    pub credit_minor: i64,
}

impl JournalLine {
    /// A debit line.
    pub fn debit(account: impl Into<String>, minor: i64) -> Self {
        Self {
            account: account.into(),
            debit_minor: minor,
            credit_minor: 0,
        }
    }

    /// A credit line.
    pub fn credit(account: impl Into<String>, minor: i64) -> Self {
        Self {
            account: account.into(),
            debit_minor: 0,
            credit_minor: minor,
        }
    }
}

/// A balanced double-entry journal in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalEntry {
    /// Deterministic id, see [`journal_id`].
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// The event that caused the entry (for an application: the payment's event).
    pub event_id: EventId,
    /// Role of the entry.
    pub kind: JournalKind,
    /// Currency of every line.
    pub currency: Currency,
    /// Accounting date, microseconds since the Unix epoch (business time, never wall clock).
    pub posted_at: i64,
    /// `invoice`, `payment` or `credit_memo`.
    pub document_type: &'static str,
    /// Business id of the document (invoice id, payment id, credit memo id).
    pub document_id: String,
    /// Human-readable memo, e.g. `invoice INV-0001`.
    pub memo: String,
    /// Lines in posting order; zero-amount lines are left out.
    pub lines: Vec<JournalLine>,
}

impl JournalEntry {
    /// Sum of the debits (equal to the credits once checked).
    pub fn total_debit(&self) -> i128 {
        self.lines.iter().map(|l| i128::from(l.debit_minor)).sum()
    }

    /// Sum of the credits.
    pub fn total_credit(&self) -> i128 {
        self.lines.iter().map(|l| i128::from(l.credit_minor)).sum()
    }

    /// Checks that every line is a non-negative debit or credit (not both) and that debits
    /// equal credits exactly. A violation is a permanent validation failure.
    pub fn check_balanced(&self) -> Result<(), Failure> {
        for (i, line) in self.lines.iter().enumerate() {
            if line.debit_minor < 0 || line.credit_minor < 0 {
                return Err(unbalanced(format!(
                    "journal {} line {}: negative amount",
                    self.id,
                    i + 1
                )));
            }
            if line.debit_minor != 0 && line.credit_minor != 0 {
                return Err(unbalanced(format!(
                    "journal {} line {}: both debit and credit",
                    self.id,
                    i + 1
                )));
            }
            if line.account.trim().is_empty() {
                return Err(unbalanced(format!(
                    "journal {} line {}: empty account",
                    self.id,
                    i + 1
                )));
            }
        }
        let (debit, credit) = (self.total_debit(), self.total_credit());
        if debit != credit {
            let exp = self.currency.exponent();
            return Err(unbalanced(format!(
                "journal {} ({}) does not balance: debits {} != credits {} {}",
                self.id,
                self.kind,
                format_minor(debit, exp),
                format_minor(credit, exp),
                self.currency
            )));
        }
        Ok(())
    }
}

fn unbalanced(detail: String) -> Failure {
    Failure::permanent(ReasonCode::Validation, detail)
}

/// The lines of a reversal: every line of `original` with its debit and credit swapped, in the
/// same order, so the reversal balances exactly when the original does and cancels it account
/// by account.
pub(crate) fn reversed_lines(original: &[JournalLine]) -> Vec<JournalLine> {
    original
        .iter()
        .map(|l| JournalLine {
            account: l.account.clone(),
            debit_minor: l.credit_minor,
            credit_minor: l.debit_minor,
        })
        .collect()
}

/// Nets signed amounts per account into lines: a positive net is a credit, a negative one a
/// debit (a discount line larger than the rest of its family), zero is dropped. Accounts keep
/// the order of their first appearance so the lines read like the source document.
pub(crate) fn net_credits(
    amounts: impl IntoIterator<Item = (String, i128)>,
) -> Vec<(String, i128)> {
    let mut order: Vec<(String, i128)> = Vec::new();
    for (account, amount) in amounts {
        match order.iter_mut().find(|(a, _)| *a == account) {
            Some((_, sum)) => *sum += amount,
            None => order.push((account, amount)),
        }
    }
    order.retain(|(_, sum)| *sum != 0);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_id() -> EventId {
        EventId::parse("6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e5f").unwrap()
    }

    #[test]
    fn journal_ids_are_deterministic_v5_and_differ_per_role() {
        let a = journal_id(&event_id(), JournalKind::Receipt);
        assert_eq!(a, journal_id(&event_id(), JournalKind::Receipt));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, journal_id(&event_id(), JournalKind::Application));
        let other = EventId::parse("6f1c2d7e-8a4b-4c3d-9e2f-0a1b2c3d4e50").unwrap();
        assert_ne!(a, journal_id(&other, JournalKind::Receipt));
        // Pinned: a change of namespace or name format would re-key every ERP delivery.
        let pinned = EventId::parse("00000000-0000-4000-8000-000000000001").unwrap();
        assert_eq!(
            journal_id(&pinned, JournalKind::Invoice).to_string(),
            "b4551a03-4df7-52d1-80d0-5038eebd6e30"
        );
    }

    #[test]
    fn kinds_round_trip() {
        for k in JournalKind::ALL {
            assert_eq!(JournalKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(JournalKind::parse("nope"), None);
    }

    #[test]
    fn reversed_lines_swap_sides_and_cancel_the_original() {
        let original = vec![
            JournalLine::debit("1100", 5360),
            JournalLine::credit("4000", 5000),
            JournalLine::debit("4100", 2),
            JournalLine::credit("2200", 362),
        ];
        let reversed = reversed_lines(&original);
        assert_eq!(
            reversed,
            [
                JournalLine::credit("1100", 5360),
                JournalLine::debit("4000", 5000),
                JournalLine::credit("4100", 2),
                JournalLine::debit("2200", 362),
            ]
        );
        for (o, r) in original.iter().zip(&reversed) {
            assert_eq!(
                o.debit_minor - o.credit_minor,
                r.credit_minor - r.debit_minor
            );
        }
        assert_eq!(reversed_lines(&reversed), original);
    }

    #[test]
    fn netting_drops_zero_and_flips_negative() {
        let lines = net_credits([
            ("4000".to_owned(), 100),
            ("4100".to_owned(), 50),
            ("4000".to_owned(), -100),
            ("4200".to_owned(), -7),
        ]);
        assert_eq!(lines, [("4100".to_owned(), 50), ("4200".to_owned(), -7)]);
    }
}
