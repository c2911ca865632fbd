//! Text messages cost the operator money per message, and attackers who sign up numbers
//! in premium-rate ranges collect a share of it (SMS pumping, toll fraud). Before a code
//! goes out by text: a send budget per country and per number prefix, and a conversion
//! breaker per prefix and per country (codes sent against codes entered over a sliding
//! window, [`ConversionBreaker`]): a range whose codes are not being entered is paused
//! until they are. Sends and verifications are counted per country, with an estimated
//! cost from the operator's price table, for the metrics.
//!
//! Per process, like the other send budgets: in a fleet each node judges the traffic it
//! sees (a balancer spreading sign-ups evenly shows every node the same conversion).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::send_budget::{BreakerConfig, ConversionBreaker, SendBudget, SendGate};

/// Countries remembered for the counters (ISO regions: about 250 exist).
const MAX_COUNTRIES: usize = 512;
/// Digits of the number, after the `+`, that name its range.
const PREFIX_DIGITS: usize = 6;

/// What the operator configures (`[accounts]` `sms_*`).
#[derive(Clone, Debug, PartialEq)]
pub struct SmsRules {
    pub per_country_per_hour: u32,
    pub per_prefix_per_hour: u32,
    pub breaker: BreakerConfig,
    /// Price of one text by country (ISO region), for the estimated cost.
    pub prices: BTreeMap<String, f64>,
    pub default_price: f64,
}

/// Why a text may not go out now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// The range's or country's codes are not being entered.
    Paused,
    /// The range or country has had its texts for this hour.
    Budget(Duration),
}

/// Sent and entered codes of one country.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountryCounts {
    pub sent: u64,
    pub verified: u64,
    pub paused: u64,
    /// The estimated cost in millionths of the price table's unit (no rounding drift).
    pub cost_micros: u64,
}

impl CountryCounts {
    pub fn estimated_cost(&self) -> f64 {
        self.cost_micros as f64 / 1e6
    }
}

pub struct SmsGuard {
    rules: SmsRules,
    per_country: SendBudget,
    per_prefix: SendBudget,
    breaker: ConversionBreaker,
    counts: Mutex<BTreeMap<String, CountryCounts>>,
}

/// The range a number belongs to: `+` and its first digits.
pub fn prefix(e164: &str) -> &str {
    let end = e164.char_indices().nth(PREFIX_DIGITS + 1).map_or(e164.len(), |(i, _)| i);
    &e164[..end]
}

impl SmsGuard {
    pub fn new(rules: SmsRules) -> SmsGuard {
        let hour = Duration::from_secs(3600);
        SmsGuard {
            per_country: SendBudget::new(rules.per_country_per_hour, hour, 4_096),
            per_prefix: SendBudget::new(rules.per_prefix_per_hour, hour, 100_000),
            breaker: ConversionBreaker::new(rules.breaker, 100_000),
            counts: Mutex::new(BTreeMap::new()),
            rules,
        }
    }

    /// Whether a text to `e164` in `country` may go out now; spends the budgets when it may.
    pub fn check(&self, country: &str, e164: &str, now_ms: u64) -> Result<(), Held> {
        let range = prefix(e164);
        let gates = [self.breaker.gate(&("prefix", range), now_ms), self.breaker.gate(&("country", country), now_ms)];
        if gates.contains(&SendGate::Paused) {
            self.count(country, |c| c.paused += 1);
            return Err(Held::Paused);
        }
        self.per_country.spend(country, now_ms).map_err(Held::Budget)?;
        self.per_prefix.spend(range, now_ms).map_err(Held::Budget)
    }

    /// A text went out to `e164`.
    pub fn sent(&self, country: &str, e164: &str, now_ms: u64) {
        self.breaker.sent(&("prefix", prefix(e164)), now_ms);
        self.breaker.sent(&("country", country), now_ms);
        let price = self.rules.prices.get(country).copied().unwrap_or(self.rules.default_price);
        self.count(country, |c| {
            c.sent += 1;
            c.cost_micros += (price * 1e6).round().max(0.0) as u64;
        });
    }

    /// A code sent by text to `e164` was entered.
    pub fn verified(&self, country: &str, e164: &str, now_ms: u64) {
        self.breaker.verified(&("prefix", prefix(e164)), now_ms);
        self.breaker.verified(&("country", country), now_ms);
        self.count(country, |c| c.verified += 1);
    }

    /// The counters, by country.
    pub fn counts(&self) -> BTreeMap<String, CountryCounts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count(&self, country: &str, add: impl FnOnce(&mut CountryCounts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = if counts.contains_key(country) || counts.len() < MAX_COUNTRIES { country } else { "other" };
        add(counts.entry(key.to_owned()).or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(min_sends: u32) -> SmsGuard {
        SmsGuard::new(SmsRules {
            per_country_per_hour: 1_000,
            per_prefix_per_hour: 50,
            breaker: BreakerConfig { min_sends, ..BreakerConfig::default() },
            prices: BTreeMap::from([("GB".to_owned(), 0.04)]),
            default_price: 0.05,
        })
    }

    #[test]
    fn a_range_is_its_first_six_digits() {
        assert_eq!(prefix("+447700900123"), "+447700");
        assert_eq!(prefix("+1234"), "+1234");
    }

    #[test]
    fn a_range_whose_codes_are_never_entered_pauses_while_others_go_on() {
        let g = guard(10);
        for n in 0..10 {
            let number = format!("+4477009001{n:02}");
            assert_eq!(g.check("GB", &number, 1_000), Ok(()));
            g.sent("GB", &number, 1_000);
        }
        assert_eq!(g.check("GB", "+447700900199", 2_000), Err(Held::Paused));
        // Another range of a country whose codes are entered goes on.
        for n in 0..10 {
            let number = format!("+8613800138{n:03}");
            g.check("CN", &number, 2_000).unwrap();
            g.sent("CN", &number, 2_000);
            g.verified("CN", &number, 2_100);
        }
        assert_eq!(g.check("CN", "+8613800138999", 3_000), Ok(()));
        let counts = g.counts();
        assert_eq!((counts["GB"].sent, counts["GB"].verified, counts["GB"].paused), (10, 0, 1));
        assert_eq!(counts["GB"].estimated_cost(), 0.4);
        assert_eq!(counts["CN"].estimated_cost(), 0.5, "the default price");
    }

    #[test]
    fn a_range_has_its_texts_per_hour() {
        let g = guard(1_000);
        for n in 0..50 {
            assert_eq!(g.check("GB", &format!("+4477009{n:05}"), 1_000), Ok(()));
        }
        assert!(matches!(g.check("GB", "+447700999999", 1_000), Err(Held::Budget(_))));
    }
}
