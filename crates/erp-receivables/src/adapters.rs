//! The built-in ERP adapters, one module per ERP (see [`crate::adapter`] for the contract and
//! for how to add one).
//!
//! | kind | module | idempotency | lookup by external id |
//! | --- | --- | --- | --- |
//! | `netsuite` | [`netsuite`] | upsert `PUT .../{type}/eid:{externalId}` | `GET .../{type}/eid:{externalId}` (after an indefinite outcome) |
//! | `dynamics365` | [`d365`] | none in D365: look up before every create | `GET /data/{Headers}?$filter=Description eq '{externalId}'&cross-company=true` |
//! | `s4hana` | [`s4hana`] | none in S/4HANA: look up before every create; asynchronous messages carry a message id derived from the external id, and one SAP already holds is adopted, not re-sent | `GET .../API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic?$filter=OriginalReferenceDocument eq '{externalId}'` |
//! | `oracle_fusion` | [`fusion`] | journal import: none (look up after an indefinite upload, and wait out a job it may have submitted); AutoInvoice: refuses a second transaction flexfield | `GET .../journalBatches?q=JournalName='{externalId}'`, `GET .../receivablesInvoices?q=InterfaceLineContext='LEDGERFLOW';InterfaceLineAttribute1='{externalId}'` |
//!
//! A kind without an adapter keeps its postings `pending`: they are written (with the journal
//! shape of [`crate::payloads`], `document_kind` `legacy`) but never claimed, and go out once
//! an adapter is registered here; an adapter should refuse (`FailClass::Mapping`) a `legacy`
//! document it cannot send.

pub mod d365;
pub mod fusion;
pub mod netsuite;
pub mod s4hana;

use ledgerflow_tenants::ErpKind;

use crate::adapter::ErpAdapter;

static NETSUITE: netsuite::NetSuite = netsuite::NetSuite;
static DYNAMICS365: d365::Dynamics365 = d365::Dynamics365;
static S4HANA: s4hana::S4Hana = s4hana::S4Hana::new();
static FUSION: fusion::Fusion = fusion::Fusion::new();

/// The adapter of a kind, if one is built.
pub fn builtin(kind: ErpKind) -> Option<&'static dyn ErpAdapter> {
    match kind {
        ErpKind::Netsuite => Some(&NETSUITE),
        ErpKind::Dynamics365 => Some(&DYNAMICS365),
        ErpKind::S4hana => Some(&S4HANA),
        ErpKind::OracleFusion => Some(&FUSION),
    }
}
