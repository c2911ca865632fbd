//! Operator roles: what each may do through the admin API. Roles are ordered; a
//! role may do everything the ones below it may.

use std::fmt;
use std::str::FromStr;

/// An operator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperatorRole {
    /// Reads: the policy, the audit log, flags, incidents, lists, attack mode.
    Viewer,
    /// Runs the service: switches, lists, incidents, tiers, invites, users' factors.
    Operator,
    /// Also manages operators.
    Admin,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 3] = [OperatorRole::Viewer, OperatorRole::Operator, OperatorRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Operator => "operator",
            OperatorRole::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: OperatorRole) -> bool {
        self >= needed
    }
}

impl fmt::Display for OperatorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected viewer, operator or admin")]
pub struct ParseRoleError(pub String);

impl FromStr for OperatorRole {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OperatorRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError(s.chars().take(32).collect()))
    }
}

/// Who is making an admin request, as the audit log names them (`operator:<name>`,
/// or `bootstrap` for the bootstrap secret), and what their role allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: OperatorRole,
}

/// Whether `name` is a valid operator name: 1–32 of `a-z`, `0-9`, `.`, `_`, `-`,
/// starting with a letter (it appears in audit entries and on the command line).
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        assert!(OperatorRole::Admin.allows(OperatorRole::Operator));
        assert!(OperatorRole::Operator.allows(OperatorRole::Viewer));
        assert!(!OperatorRole::Viewer.allows(OperatorRole::Operator));
        assert!(!OperatorRole::Operator.allows(OperatorRole::Admin));
        for role in OperatorRole::ALL {
            assert_eq!(role.as_str().parse::<OperatorRole>(), Ok(role));
        }
        assert!("root".parse::<OperatorRole>().is_err());
    }

    #[test]
    fn names_are_short_plain_and_start_with_a_letter() {
        assert!(valid_name("alice") && valid_name("on-call.2"));
        for bad in ["", "Alice", "1st", "a b", "bootstrap\n", &"a".repeat(33), "ops/x"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
