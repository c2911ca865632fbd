//! Text messages cost the operator money per message, and attackers who sign up numbers
//! in premium-rate ranges collect a share of it (SMS pumping, toll fraud). Before a code
//! goes out by text: a send budget per country and per number prefix, and a conversion
//! breaker per prefix, country and sender subnet (codes sent against codes entered over a
//! sliding window, [`ConversionBreaker`]): where few codes are entered, a send needs a
//! high-difficulty proof of work (which the gateway checks); where almost none are, sends
//! pause until codes are entered again. Sends and verifications are counted per country,
//! with an estimated cost from the operator's price table, for the metrics.
//!
//! [`SmsGuard::review`] re-reads every range that is being held, so that a change (held,
//! released) is reported once, when it happens, for the audit log, the status page and the
//! automatic narrowing of the registration policy (see `service::texts`).
//!
//! Per process, like the other send budgets: in a fleet each node judges the traffic it
//! sees (a balancer spreading sign-ups evenly shows every node the same conversion).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::policy::RegistrationPolicy;
use crate::send_budget::{BreakerConfig, ConversionBreaker, SendBudget, SendGate};

/// Countries remembered for the counters (ISO regions: about 250 exist).
const MAX_COUNTRIES: usize = 512;
/// Digits of the number, after the `+`, that name its range.
const PREFIX_DIGITS: usize = 6;
/// Held ranges, countries and subnets watched for their release; past it new ones are
/// still held (the breaker decides) but not reported one by one.
const MAX_WATCHED: usize = 1_024;

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
    /// Few of the codes sent there are entered: the sender must solve a proof of work.
    Proof,
    /// The range's, country's or subnet's codes are not being entered.
    Paused,
    /// The range or country has had its texts for this hour.
    Budget(Duration),
}

/// Whether the sender of a text solved the proof of work that [`Held::Proof`] asks for
/// (the gateway's edge checks it; this crate only hears the verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextProof {
    Absent,
    Solved,
}

/// What a breaker key is: a number range, a country, or the subnet of the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Prefix,
    Country,
    Subnet,
}

/// One gate that changed since the last [`SmsGuard::review`].
#[derive(Clone, Debug, PartialEq)]
pub struct GateChange {
    pub scope: Scope,
    pub key: String,
    pub from: SendGate,
    pub to: SendGate,
    /// Codes sent and entered over the window it was judged on.
    pub sent: f64,
    pub verified: f64,
}

/// The gates held now, after a review.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Review {
    pub changes: Vec<GateChange>,
    /// Every key held now, with its gate.
    pub held: Vec<(Scope, String, SendGate)>,
    /// Codes entered over codes sent, every text of this process over the window (`None`
    /// under the breaker's minimum of sends).
    pub conversion: Option<f64>,
}

/// What is held now (as of the last review), for the status page and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextsHeld {
    /// Ranges, countries and subnets whose texts need a proof of work...
    pub proof: usize,
    /// ...or are paused.
    pub paused: usize,
    /// Registration narrowed to the home regions by the breaker.
    pub narrowed: bool,
}

/// What the account service remembers between reviews (see `service::texts`).
#[derive(Debug, Default)]
pub(crate) struct TextsState {
    pub(crate) held: TextsHeld,
    /// While narrowed: the policy set, and the one to go back to.
    pub(crate) narrowed: Option<(RegistrationPolicy, RegistrationPolicy)>,
    pub(crate) hold_until_ms: i64,
    pub(crate) trips: u32,
    pub(crate) last_trip_ms: i64,
    /// The policy whose stored restore marker was last read (one read per policy seen).
    pub(crate) looked_for: Option<RegistrationPolicy>,
}

/// Sent and entered codes of one country.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountryCounts {
    pub sent: u64,
    pub verified: u64,
    pub paused: u64,
    /// Texts held until the sender solved a proof of work.
    pub proof_required: u64,
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
    /// Keys last seen held, with the gate reported for them.
    watched: Mutex<BTreeMap<(Scope, String), SendGate>>,
}

/// The range a number belongs to: `+` and its first digits.
pub fn prefix(e164: &str) -> &str {
    let end = e164.char_indices().nth(PREFIX_DIGITS + 1).map_or(e164.len(), |(i, _)| i);
    &e164[..end]
}

/// The breaker's key for every text of the process: judged, never gated (one range's
/// pumping must not stop every genuine sign-up), and read by [`SmsGuard::review`].
const ALL: (&str, &str) = ("all", "");

impl SmsGuard {
    pub fn new(rules: SmsRules) -> SmsGuard {
        let hour = Duration::from_secs(3600);
        SmsGuard {
            per_country: SendBudget::new(rules.per_country_per_hour, hour, 4_096),
            per_prefix: SendBudget::new(rules.per_prefix_per_hour, hour, 100_000),
            breaker: ConversionBreaker::new(rules.breaker, 100_000),
            counts: Mutex::new(BTreeMap::new()),
            watched: Mutex::new(BTreeMap::new()),
            rules,
        }
    }

    fn keys<'a>(country: &'a str, e164: &'a str, subnet: Option<&'a str>) -> impl Iterator<Item = (Scope, &'a str)> {
        [(Scope::Prefix, prefix(e164)), (Scope::Country, country)].into_iter().chain(subnet.map(|s| (Scope::Subnet, s)))
    }

    /// Whether a text to `e164` in `country`, asked for from `subnet`, may go out now;
    /// spends the budgets when it may.
    pub fn check(
        &self,
        country: &str,
        e164: &str,
        subnet: Option<&str>,
        proof: TextProof,
        now_ms: u64,
    ) -> Result<(), Held> {
        let mut worst = SendGate::Open;
        for (scope, key) in Self::keys(country, e164, subnet) {
            let gate = self.breaker.gate(&(scope, key), now_ms);
            if gate != SendGate::Open {
                self.watch(scope, key);
            }
            worst = match (worst, gate) {
                (SendGate::Paused, _) | (_, SendGate::Paused) => SendGate::Paused,
                (SendGate::ProofOfWork, _) | (_, SendGate::ProofOfWork) => SendGate::ProofOfWork,
                _ => SendGate::Open,
            };
        }
        match (worst, proof) {
            (SendGate::Paused, _) => {
                self.count(country, |c| c.paused += 1);
                return Err(Held::Paused);
            }
            (SendGate::ProofOfWork, TextProof::Absent) => {
                self.count(country, |c| c.proof_required += 1);
                return Err(Held::Proof);
            }
            _ => {}
        }
        self.per_country.spend(country, now_ms).map_err(Held::Budget)?;
        self.per_prefix.spend(prefix(e164), now_ms).map_err(Held::Budget)
    }

    /// A text went out to `e164`, asked for from `subnet`.
    pub fn sent(&self, country: &str, e164: &str, subnet: Option<&str>, now_ms: u64) {
        for (scope, key) in Self::keys(country, e164, subnet) {
            self.breaker.sent(&(scope, key), now_ms);
        }
        self.breaker.sent(&ALL, now_ms);
        let price = self.rules.prices.get(country).copied().unwrap_or(self.rules.default_price);
        self.count(country, |c| {
            c.sent += 1;
            c.cost_micros += (price * 1e6).round().max(0.0) as u64;
        });
    }

    /// A code sent by text to `e164` was entered, from `subnet` when known (mostly the
    /// one that asked for it: the store does not keep where a sign-up came from).
    pub fn verified(&self, country: &str, e164: &str, subnet: Option<&str>, now_ms: u64) {
        for (scope, key) in Self::keys(country, e164, subnet) {
            self.breaker.verified(&(scope, key), now_ms);
        }
        self.breaker.verified(&ALL, now_ms);
        self.count(country, |c| c.verified += 1);
    }

    /// Re-reads every held key: what changed since the last review, and what is held now.
    pub fn review(&self, now_ms: u64) -> Review {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut review = Review::default();
        watched.retain(|(scope, key), last| {
            let reading = self.breaker.reading(&(*scope, key.as_str()), now_ms);
            if reading.gate != *last {
                review.changes.push(GateChange {
                    scope: *scope,
                    key: key.clone(),
                    from: *last,
                    to: reading.gate,
                    sent: reading.sent,
                    verified: reading.verified,
                });
                *last = reading.gate;
            }
            if reading.gate != SendGate::Open {
                review.held.push((*scope, key.clone(), reading.gate));
            }
            reading.gate != SendGate::Open
        });
        let all = self.breaker.reading(&ALL, now_ms);
        review.conversion = (all.sent >= f64::from(self.rules.breaker.min_sends)).then(|| all.verified / all.sent);
        review
    }

    /// Starts watching a held key (as open, so the next review reports its change).
    fn watch(&self, scope: Scope, key: &str) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.len() < MAX_WATCHED && !watched.contains_key(&(scope, key.to_owned())) {
            watched.insert((scope, key.to_owned()), SendGate::Open);
        }
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

    const NET: Option<&str> = Some("198.51.100.0/24");

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
            assert_eq!(g.check("GB", &number, None, TextProof::Absent, 1_000), Ok(()));
            g.sent("GB", &number, None, 1_000);
        }
        assert_eq!(g.check("GB", "+447700900199", None, TextProof::Solved, 2_000), Err(Held::Paused));
        // Another range of a country whose codes are entered goes on.
        for n in 0..10 {
            let number = format!("+8613800138{n:03}");
            g.check("CN", &number, None, TextProof::Absent, 2_000).unwrap();
            g.sent("CN", &number, None, 2_000);
            g.verified("CN", &number, None, 2_100);
        }
        assert_eq!(g.check("CN", "+8613800138999", None, TextProof::Absent, 3_000), Ok(()));
        let counts = g.counts();
        assert_eq!((counts["GB"].sent, counts["GB"].verified, counts["GB"].paused), (10, 0, 1));
        assert_eq!(counts["GB"].estimated_cost(), 0.4);
        assert_eq!(counts["CN"].estimated_cost(), 0.5, "the default price");
    }

    #[test]
    fn low_conversion_asks_for_a_proof_before_it_pauses() {
        let g = guard(10);
        // 2 of 10 codes entered: 20 %, under the proof line (30 %), over the pause (10 %).
        for n in 0..10 {
            let number = format!("+4477009001{n:02}");
            g.check("GB", &number, None, TextProof::Absent, 1_000).unwrap();
            g.sent("GB", &number, None, 1_000);
            if n < 2 {
                g.verified("GB", &number, None, 1_000);
            }
        }
        assert_eq!(g.check("GB", "+447700900150", None, TextProof::Absent, 2_000), Err(Held::Proof));
        assert_eq!(g.check("GB", "+447700900150", None, TextProof::Solved, 2_000), Ok(()));
        assert_eq!(g.counts()["GB"].proof_required, 1);
    }

    #[test]
    fn a_subnet_whose_codes_are_never_entered_pauses_whatever_the_range() {
        let g = guard(10);
        let home = Some("203.0.113.0/24");
        for n in 0..30 {
            let number = format!("+4478009{n:05}");
            g.check("GB", &number, home, TextProof::Absent, 1_000).unwrap();
            g.sent("GB", &number, home, 1_000);
            g.verified("GB", &number, home, 1_000);
        }
        for n in 0..10 {
            // Every number in a range of its own, all asked for from one network.
            let number = format!("+44770{n}900100");
            g.check("GB", &number, NET, TextProof::Absent, 1_000).unwrap();
            g.sent("GB", &number, NET, 1_000);
        }
        assert_eq!(g.check("GB", "+447719900100", NET, TextProof::Absent, 2_000), Err(Held::Paused));
        assert_eq!(g.check("GB", "+447719900100", home, TextProof::Absent, 2_000), Ok(()), "the range is fresh");
    }

    #[test]
    fn a_review_reports_a_hold_once_and_its_release_once() {
        let g = guard(10);
        for n in 0..10 {
            let number = format!("+4477009001{n:02}");
            g.check("GB", &number, None, TextProof::Absent, 1_000).unwrap();
            g.sent("GB", &number, None, 1_000);
        }
        assert!(g.review(1_000).changes.is_empty(), "nothing is held until a send is asked for");
        let _ = g.check("GB", "+447700900199", None, TextProof::Absent, 2_000);
        let review = g.review(2_000);
        let changed: Vec<(Scope, &str, SendGate)> =
            review.changes.iter().map(|c| (c.scope, c.key.as_str(), c.to)).collect();
        assert_eq!(changed, [(Scope::Prefix, "+447700", SendGate::Paused), (Scope::Country, "GB", SendGate::Paused)]);
        assert_eq!(review.held.len(), 2);
        assert_eq!(review.conversion, Some(0.0));
        assert!(g.review(3_000).changes.is_empty(), "reported once");
        // Two windows later the evidence has slid out: released, once.
        let later = 1_000 + 2 * 900_000;
        let review = g.review(later);
        assert_eq!(review.changes.len(), 2);
        assert!(review.changes.iter().all(|c| c.from == SendGate::Paused && c.to == SendGate::Open));
        assert!(review.held.is_empty() && review.conversion.is_none());
        assert!(g.review(later + 1).changes.is_empty());
    }

    #[test]
    fn a_range_has_its_texts_per_hour() {
        let g = guard(1_000);
        for n in 0..50 {
            assert_eq!(g.check("GB", &format!("+4477009{n:05}"), None, TextProof::Absent, 1_000), Ok(()));
        }
        assert!(matches!(g.check("GB", "+447700999999", None, TextProof::Absent, 1_000), Err(Held::Budget(_))));
    }
}
