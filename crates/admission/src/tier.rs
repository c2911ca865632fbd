//! Trust tiers inside a class: who among the accounts of one class is served first.
//!
//! A verified account is not a trusted one: an account farm verifies thousands cheaply. The
//! gateway ranks accounts by what an attacker cannot buy quickly (age, a record of use before
//! the attack, an operator's pin) and passes the result as a [`Tier`]. Inside a class, tiers
//! share capacity by weighted max-min fairness: a freed slot goes to the tier using the least
//! of its weight, so with the default weights established demand is met first and recent
//! accounts get what is left.

use std::fmt;
use std::ops::{Index, IndexMut};
use std::str::FromStr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// How far an account is trusted inside its class; the order is the order of service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Old enough, with a record of ordinary use before any current attack, or pinned.
    Established,
    /// Neither established nor recent; also every request without an account.
    #[default]
    Standard,
    /// Created recently: where an account farm lands.
    Recent,
}

impl Tier {
    /// Number of tiers.
    pub const COUNT: usize = 3;
    /// Every tier, most trusted first.
    pub const ALL: [Tier; Self::COUNT] = [Self::Established, Self::Standard, Self::Recent];

    /// 0 for the most trusted tier; also the index into a [`PerTier`].
    pub const fn rank(self) -> usize {
        self as usize
    }

    /// The stable lower-case name used in configuration, metrics labels and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::Standard => "standard",
            Self::Recent => "recent",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tier name that is not one of `established`, `standard`, `recent`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}; expected established, standard or recent")]
pub struct ParseTierError(String);

impl FromStr for Tier {
    type Err = ParseTierError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|tier| tier.as_str() == s).ok_or_else(|| ParseTierError(s.to_owned()))
    }
}

/// One value per tier, indexed by [`Tier`]; serialised as a map keyed by tier name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerTier<T>(pub [T; Tier::COUNT]);

impl<T> PerTier<T> {
    /// The values with their tier, most trusted first.
    pub fn iter(&self) -> impl Iterator<Item = (Tier, &T)> {
        Tier::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> Index<Tier> for PerTier<T> {
    type Output = T;

    fn index(&self, tier: Tier) -> &T {
        &self.0[tier.rank()]
    }
}

impl<T> IndexMut<Tier> for PerTier<T> {
    fn index_mut(&mut self, tier: Tier) -> &mut T {
        &mut self.0[tier.rank()]
    }
}

impl<T: Serialize> Serialize for PerTier<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Tier::COUNT))?;
        for (tier, value) in self.iter() {
            map.serialize_entry(tier.as_str(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_service_order() {
        for (rank, tier) in Tier::ALL.into_iter().enumerate() {
            assert_eq!(tier.rank(), rank);
            assert_eq!(tier.as_str().parse::<Tier>(), Ok(tier));
        }
        assert!(Tier::Established < Tier::Recent);
        assert!("Recent".parse::<Tier>().is_err());
        assert_eq!(Tier::default(), Tier::Standard);
    }
}
