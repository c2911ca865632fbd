//! Priority classes: who is served first when upstream capacity is short.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// The class a request is admitted under, assigned by the gateway after identity.
///
/// The order is the order of service: `Operator < Member < … < Anonymous`, so a smaller
/// class is more important, is granted a freed slot first and is shed last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorityClass {
    /// The operator and health checks.
    Operator,
    /// Logged-in users and API keys in good standing: the people the service exists for.
    Member,
    /// Login attempts.
    Login,
    /// New or unverified accounts.
    Newcomer,
    /// Registration and anonymous traffic.
    Anonymous,
}

impl PriorityClass {
    /// Number of classes.
    pub const COUNT: usize = 5;
    /// Every class, most important first.
    pub const ALL: [PriorityClass; Self::COUNT] =
        [Self::Operator, Self::Member, Self::Login, Self::Newcomer, Self::Anonymous];

    /// 0 for the most important class, 4 for the least; also the index into a [`PerClass`].
    pub const fn rank(self) -> usize {
        self as usize
    }

    /// The stable lower-case name used in configuration, metrics labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Member => "member",
            Self::Login => "login",
            Self::Newcomer => "newcomer",
            Self::Anonymous => "anonymous",
        }
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class name that is not one of `operator`, `member`, `login`, `newcomer`, `anonymous`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority class {0:?}; expected operator, member, login, newcomer or anonymous")]
pub struct ParseClassError(String);

impl FromStr for PriorityClass {
    type Err = ParseClassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|class| class.as_str() == s).ok_or_else(|| ParseClassError(s.to_owned()))
    }
}

/// One value per class, indexed by [`PriorityClass`]; serialised as a map keyed by class name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerClass<T>(pub [T; PriorityClass::COUNT]);

impl<T> PerClass<T> {
    /// The values with their class, most important class first.
    pub fn iter(&self) -> impl Iterator<Item = (PriorityClass, &T)> {
        PriorityClass::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> Index<PriorityClass> for PerClass<T> {
    type Output = T;

    fn index(&self, class: PriorityClass) -> &T {
        &self.0[class.rank()]
    }
}

impl<T> IndexMut<PriorityClass> for PerClass<T> {
    fn index_mut(&mut self, class: PriorityClass) -> &mut T {
        &mut self.0[class.rank()]
    }
}

impl<T: Serialize> Serialize for PerClass<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(PriorityClass::COUNT))?;
        for (class, value) in self.iter() {
            map.serialize_entry(class.as_str(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_service_order() {
        for (rank, class) in PriorityClass::ALL.into_iter().enumerate() {
            assert_eq!(class.rank(), rank);
            assert_eq!(class.as_str().parse::<PriorityClass>(), Ok(class));
            assert_eq!(class.to_string(), class.as_str());
        }
        assert!(PriorityClass::Operator < PriorityClass::Member);
        assert!(PriorityClass::Newcomer < PriorityClass::Anonymous);
        assert!("Member".parse::<PriorityClass>().is_err(), "names are case-sensitive, like the config keys");
        assert!("".parse::<PriorityClass>().is_err());
    }

    #[test]
    fn per_class_indexes_by_class() {
        let mut counts = PerClass([0u32; PriorityClass::COUNT]);
        counts[PriorityClass::Login] += 3;
        assert_eq!(counts.0, [0, 0, 3, 0, 0]);
        assert_eq!(counts.iter().find(|(_, n)| **n == 3).map(|(c, _)| c), Some(PriorityClass::Login));
    }
}
