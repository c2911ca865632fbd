//! Palisade's durable state behind one type, [`Store`], with two back-ends:
//! SQLite (the embedded default, one file) and PostgreSQL (several gateway nodes).
//!
//! Each back-end has its own migrations, embedded in the binary and applied by
//! [`Store::migrate`]. Every query is written for both back-ends here, so the
//! rest of Palisade never sees SQL, and one contract suite (`tests/contract.rs`)
//! runs against both.

mod accounts;
mod audit;
mod lists;
mod operators;
mod pool;
mod status;

pub use accounts::{
    ApiKeyRow, CodePurpose, Identifier, NewApiKey, NewCode, NewRegistration, NewUser, SessionRow, UserRow, UserStatus,
};
pub use audit::{AuditEntry, AuditRecord, ChainBreak, ChainReport, ChainedRecord};
pub use lists::{ListRuleRow, MAX_LIST_RULES};
pub use operators::{OperatorRow, OperatorSessionRow};
pub use pool::{Backend, Store, StoreError, redact_url};
pub use status::{
    IncidentChange, IncidentRecord, IncidentRow, IncidentUpdateRow, MaintenanceRow, NewIncident, NewMaintenance,
    StatusChangeRow,
};
