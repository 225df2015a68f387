//! The built-in ERP adapters, one module per ERP (see [`crate::adapter`] for the contract and
//! for how to add one).
//!
//! | kind | module | status |
//! | --- | --- | --- |
//! | `netsuite` | `netsuite` | not yet |
//! | `dynamics365` | `d365` | not yet |
//! | `s4hana` | `s4hana` | not yet |
//! | `oracle_fusion` | `fusion` | not yet |
//!
//! A kind without an adapter keeps its postings `pending`: they are written (with the legacy
//! journal shape of [`crate::payloads`]) but never claimed, and go out once an adapter is
//! registered here.

use ledgerflow_tenants::ErpKind;

use crate::adapter::ErpAdapter;

/// The adapter of a kind, if one is built.
pub fn builtin(kind: ErpKind) -> Option<&'static dyn ErpAdapter> {
    match kind {
        ErpKind::Netsuite | ErpKind::Dynamics365 | ErpKind::S4hana | ErpKind::OracleFusion => None,
    }
}
