//! A configuration field that failed validation. Every section's `validate` reports
//! into one list, so `palisade config check` names every bad field at once.

/// A field that failed validation, named by its path in the TOML file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> InvalidField {
    InvalidField { field: field.into(), reason: reason.into() }
}
