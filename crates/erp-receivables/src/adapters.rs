//! The built-in ERP adapters, one module per ERP (see [`crate::adapter`] for the contract and
//! for how to add one).
//!
//! | kind | module | idempotency | lookup by the ERP key ([`crate::posting::erp_key`]: the external id where the ERP's field holds it, else its 20-character compact key) |
//! | --- | --- | --- | --- |
//! | `netsuite` | [`netsuite`] | upsert `PUT .../{type}/eid:{externalId}` | `GET .../{type}/eid:{externalId}` (after an indefinite outcome) |
//! | `dynamics365` | [`d365`] | none in D365: look up before every create | `GET /data/{Headers}?$filter=Description eq '{erpKey}'&cross-company=true` |
//! | `s4hana` | [`s4hana`] | none in S/4HANA: look up before every create; asynchronous messages carry a message id derived from the external id, and one SAP already holds is adopted, not re-sent | `GET .../API_JOURNALENTRYITEMBASIC_SRV/A_JournalEntryItemBasic?$filter=OriginalReferenceDocument eq '{erpKey}'` |
//! | `oracle_fusion` | [`fusion`] | journal import: none (look up after an indefinite upload, and wait out a job it may have submitted); AutoInvoice: refuses a second transaction flexfield | `GET .../journalBatches?q=JournalName='{erpKey}'`, `GET .../receivablesInvoices?q=InterfaceLineContext='LEDGERFLOW';InterfaceLineAttribute1='{erpKey}'` |
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

/// What the adapters' unit tests share: rendering one event's journal for tenant `acme`.
#[cfg(test)]
pub(crate) mod test_support {
    use ledgerflow_tenants::{ErpKind, ErpMode};

    use crate::adapter::{ErpAdapter, RenderInput, Rendered};
    use crate::journal::JournalKind;
    use crate::mapping::tests::{envelope, tenant};
    use crate::mapping::{ErpRoute, map_event};

    /// Maps `event` for tenant `acme` routed to `kind` in `mode` and renders its journal (its
    /// kind replaced by `journal_kind` when given) through `adapter`, external id
    /// `lf-acme-x-inv`, customer `cus-1`, no invoice reference.
    pub(crate) fn render_with(
        adapter: &dyn ErpAdapter,
        kind: ErpKind,
        event: ledgerflow_core::Event,
        mode: ErpMode,
        journal_kind: Option<JournalKind>,
    ) -> Rendered {
        let mut t = tenant("acme", Some(kind));
        if let Some(erp) = &mut t.erp {
            erp.mode = mode;
        }
        let effect = map_event(&envelope(event), &t).unwrap();
        let route: ErpRoute = effect.route.unwrap();
        let mut journal = effect.posting.journal().unwrap().clone();
        if let Some(k) = journal_kind {
            journal.kind = k;
        }
        let input = RenderInput {
            journal: &journal,
            route: &route,
            external_id: "lf-acme-x-inv",
            customer_id: "cus-1",
            invoice: None,
        };
        adapter.render(&input).unwrap()
    }

    /// The body of the first fenced block of `fence` after `heading` in a markdown text.
    pub(crate) fn code_block(doc: &str, heading: &str, fence: &str) -> String {
        let at = doc
            .find(heading)
            .unwrap_or_else(|| panic!("no {heading:?}"));
        let rest = &doc[at..];
        let start = rest
            .find(fence)
            .unwrap_or_else(|| panic!("no {fence} after {heading:?}"))
            + fence.len();
        let end = rest[start..].find("```").unwrap();
        rest[start..start + end].trim().to_owned()
    }
}
