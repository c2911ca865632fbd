//! Who a valid credential speaks for: what the gateway needs to know about the
//! holder of an API key or session on every request.

use store::UserStatus;

use crate::tier::Tenure;

/// What a valid API key or session says about its holder.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    pub user_id: i64,
    pub status: UserStatus,
    /// `Some(prefix)` when authenticated by API key.
    pub key_prefix: Option<String>,
    pub scopes: Vec<String>,
    /// The API key's own requests-per-minute budget, if it has one.
    pub rpm_limit: Option<u32>,
    /// The account's history, from which its trust tier is decided per request.
    pub tenure: Tenure,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}
