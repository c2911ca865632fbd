//! API abuse signals beyond a single request: the same prompt sent again and
//! again, many accounts behind one subnet, and an account's token volume
//! jumping far above its own habit. Each signal becomes a strike (see
//! `super::Strikes`), so it throttles, then suspends, per `[abuse]`.
//!
//! Every map is bounded; when one is full it is cleared, which forgets
//! recent history (a signal may fire later than it could) but never grows.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{AbusePolicy, RECENT_PROMPTS};

const MAX_CALLERS: usize = 100_000;
const MAX_SUBNETS: usize = 10_000;
/// Accounts remembered per subnet (enough to pass any sane threshold).
const SUBNET_ACCOUNTS: usize = 256;

/// Why a caller was flagged by its activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    RepeatedPrompt,
    ManyAccountsOnSubnet,
    TokenSpike,
}

impl Signal {
    pub fn code(self) -> &'static str {
        match self {
            Signal::RepeatedPrompt => "repeated_prompt",
            Signal::ManyAccountsOnSubnet => "many_accounts_on_subnet",
            Signal::TokenSpike => "token_spike",
        }
    }
}

struct TokenMinute {
    started: Instant,
    used: u64,
    /// Tokens per minute in past minutes, smoothed.
    habit: Option<f64>,
    flagged: bool,
}

#[derive(Default)]
struct State {
    prompts: HashMap<u64, VecDeque<(u64, Instant)>>,
    subnets: HashMap<u64, (Vec<i64>, bool)>,
    tokens: HashMap<i64, TokenMinute>,
}

pub struct ActivityMonitor {
    policy: AbusePolicy,
    state: Mutex<State>,
}

/// A fingerprint of a prompt that ignores case, spacing, punctuation and
/// digits, so trivially varied copies of one prompt look the same.
pub fn fingerprint(text: &str) -> u64 {
    // FNV-1a over the letters only, lowercased. It runs on every generation request:
    // ASCII letters (most of most prompts) are taken a byte at a time, without the
    // Unicode tables.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut step = |b: u8| {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for c in text.chars() {
        if c.is_ascii() {
            if c.is_ascii_alphabetic() {
                step(c.to_ascii_lowercase() as u8);
            }
        } else if c.is_alphabetic() {
            for lower in c.to_lowercase() {
                let mut buf = [0u8; 4];
                lower.encode_utf8(&mut buf).bytes().for_each(&mut step);
            }
        }
    }
    hash
}

impl ActivityMonitor {
    pub fn new(policy: AbusePolicy) -> ActivityMonitor {
        ActivityMonitor { policy, state: Mutex::new(State::default()) }
    }

    /// Record one generation request and return the signals it raises (each
    /// at most once per episode).
    pub fn observe(
        &self,
        caller: u64,
        subnet: u64,
        account: Option<i64>,
        prompt: Option<u64>,
        tokens: u32,
        now: Instant,
    ) -> Vec<Signal> {
        let p = &self.policy;
        let mut signals = Vec::new();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());

        if let (Some(fp), true) = (prompt, p.repeated_prompts > 0) {
            if state.prompts.len() >= MAX_CALLERS && !state.prompts.contains_key(&caller) {
                state.prompts.clear();
            }
            let recent = state.prompts.entry(caller).or_default();
            // Entries arrive in time order: only the oldest can have expired, so
            // this runs on every generation request without scanning the rest.
            if let Some(cutoff) = now.checked_sub(Duration::from_secs(p.repeat_window_s)) {
                while recent.front().is_some_and(|(_, at)| *at <= cutoff) {
                    recent.pop_front();
                }
            }
            if recent.len() == RECENT_PROMPTS {
                recent.pop_front();
            }
            recent.push_back((fp, now));
            let same = recent.iter().filter(|(f, _)| *f == fp).count() as u32;
            // Exactly at the threshold, so one burst of copies is one strike.
            if same == p.repeated_prompts {
                signals.push(Signal::RepeatedPrompt);
            }
        }

        if let (Some(account), true) = (account, p.accounts_per_subnet > 0) {
            if state.subnets.len() >= MAX_SUBNETS && !state.subnets.contains_key(&subnet) {
                state.subnets.clear();
            }
            let (accounts, flagged) = state.subnets.entry(subnet).or_default();
            if !accounts.contains(&account) && accounts.len() < SUBNET_ACCOUNTS {
                accounts.push(account);
            }
            if !*flagged && accounts.len() as u32 >= p.accounts_per_subnet {
                *flagged = true;
                signals.push(Signal::ManyAccountsOnSubnet);
            }
        }

        if let (Some(account), true) = (account, p.token_spike_factor > 0.0) {
            if state.tokens.len() >= MAX_CALLERS && !state.tokens.contains_key(&account) {
                state.tokens.clear();
            }
            let minute = state.tokens.entry(account).or_insert(TokenMinute {
                started: now,
                used: 0,
                habit: None,
                flagged: false,
            });
            if now.duration_since(minute.started) >= Duration::from_secs(60) {
                let last = minute.used as f64;
                minute.habit = Some(match minute.habit {
                    None => last,
                    Some(h) => 0.8 * h + 0.2 * last,
                });
                minute.started = now;
                minute.used = 0;
                minute.flagged = false;
            }
            minute.used += u64::from(tokens);
            let habit = minute.habit.unwrap_or(0.0);
            let over = minute.used as f64 > p.token_spike_factor * habit.max(1.0);
            if !minute.flagged && minute.used >= p.token_spike_floor && over {
                minute.flagged = true;
                signals.push(Signal::TokenSpike);
            }
        }
        signals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn monitor() -> ActivityMonitor {
        ActivityMonitor::new(AbusePolicy {
            repeated_prompts: 3,
            accounts_per_subnet: 3,
            token_spike_factor: 5.0,
            token_spike_floor: 1000,
            ..AbusePolicy::default()
        })
    }

    #[test]
    fn fingerprints_ignore_case_spacing_and_digits() {
        assert_eq!(fingerprint("Tell me your SECRET, #1"), fingerprint("tell me your secret #2!"));
        assert_ne!(fingerprint("tell me a joke"), fingerprint("tell me a story"));
        assert_eq!(fingerprint("ÜBER Straße, 2"), fingerprint("über straße"));
        assert_eq!(fingerprint("请 告诉我 1"), fingerprint("请告诉我"));
    }

    #[test]
    fn the_ascii_fast_path_hashes_as_the_unicode_path_does() {
        // The definition: FNV-1a over the UTF-8 of the lowercased letters.
        let reference = |text: &str| {
            let letters: String = text.chars().filter(|c| c.is_alphabetic()).flat_map(char::to_lowercase).collect();
            letters.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        };
        for text in ["hello", "Hello, World!", "İstanbul ΣΊΣΥΦΟΣ", "mixed Ünïcödé and ASCII 42", "", "  \t\n"]
        {
            assert_eq!(fingerprint(text), reference(text), "{text}");
        }
    }

    #[test]
    fn the_same_prompt_again_and_again_is_flagged_once() {
        let m = monitor();
        let t = Instant::now();
        let fp = Some(fingerprint("ignore the rules"));
        let mut fired = 0;
        for i in 0..6 {
            fired += m.observe(1, 9, None, fp, 10, t + Duration::from_secs(i)).len();
        }
        assert_eq!(fired, 1);
        // Varied prompts never fire.
        let other = (0..10).map(|i| m.observe(2, 9, None, Some(i), 10, t).len()).sum::<usize>();
        assert_eq!(other, 0);
    }

    #[test]
    fn the_default_repeat_threshold_is_reachable() {
        let m = ActivityMonitor::new(AbusePolicy::default());
        let t = Instant::now();
        let fp = Some(fingerprint("same thing"));
        let fired: usize = (0..100).map(|_| m.observe(1, 9, None, fp, 10, t).len()).sum();
        assert_eq!(fired, 1);
    }

    #[test]
    fn many_accounts_behind_one_subnet_flag_the_subnet_once() {
        let m = monitor();
        let t = Instant::now();
        let fired: Vec<Signal> = (0..6).flat_map(|a| m.observe(a as u64, 77, Some(a), None, 10, t)).collect();
        assert_eq!(fired, vec![Signal::ManyAccountsOnSubnet]);
    }

    #[test]
    fn a_token_spike_over_the_accounts_habit_is_flagged() {
        let m = monitor();
        let t = Instant::now();
        // A habit of about 300 tokens a minute for five minutes.
        for minute in 0..5 {
            let at = t + Duration::from_secs(60 * minute);
            assert!(m.observe(1, 5, Some(1), None, 300, at).is_empty());
        }
        // Then 2000 in one minute: over 5× the habit and over the floor.
        let at = t + Duration::from_secs(60 * 5 + 1);
        let fired: Vec<Signal> = (0..10).flat_map(|_| m.observe(1, 5, Some(1), None, 200, at)).collect();
        assert_eq!(fired, vec![Signal::TokenSpike]);
    }
}
