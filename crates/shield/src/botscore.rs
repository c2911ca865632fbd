//! A bot score from cheap request signals: user agent, header set, timing regularity,
//! failed challenges, subnet reputation and sign-up velocity. Each signal adds a configured
//! weight; the sum (capped at 100) picks an [`Action`], and every contributing signal is
//! reported as a stable snake_case reason code for logs, metrics and the admin API.
//!
//! Meant for anonymous and browser traffic (pages, registration, login). A request with a
//! valid API key or session is identified and limited per account instead: the OpenAI SDK
//! and `curl` are legitimate API clients, and scoring them would only hurt paying users.
//! Every signal can be forged by a careful bot; the score exists to make the cheap bots pay
//! (challenge) and to aim the stricter limits, not to prove anything.

use serde::{Deserialize, Serialize};

use crate::meter::TimingStats;

/// The cheap facts about one request. Build with [`RequestSignals::from_headers`] and fill
/// in the per-source fields from the meters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RequestSignals<'a> {
    pub user_agent: Option<&'a str>,
    pub has_accept_language: bool,
    pub has_accept_encoding: bool,
    /// The `Sec-CH-UA` header, if sent.
    pub sec_ch_ua: Option<&'a str>,
    /// Chromium only sends client hints over secure connections; without TLS their absence
    /// means nothing.
    pub https: bool,
    /// This source's inter-arrival statistics ([`crate::meter::TimingTracker`]).
    pub timing: Option<TimingStats>,
    /// Recently failed or abandoned challenges from this source.
    pub failed_challenges: u32,
    /// 0 (clean) ..= 100 (known bad) for the client's subnet, from the operator's feeds or
    /// past incidents.
    pub subnet_reputation: u8,
    /// Sign-ups from the client's subnet over the last hour (a
    /// [`crate::meter::DecayingCount`] with a one-hour half-life is a fair estimate).
    pub subnet_signups_per_hour: f32,
}

impl<'a> RequestSignals<'a> {
    /// The header-derived fields from `(name, value)` pairs (names in any case). Values that
    /// are not text should be passed as empty strings.
    pub fn from_headers(headers: impl IntoIterator<Item = (&'a str, &'a str)>, https: bool) -> Self {
        let mut s = Self { https, ..Self::default() };
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("user-agent") {
                s.user_agent = Some(value);
            } else if name.eq_ignore_ascii_case("accept-language") {
                s.has_accept_language = !value.trim().is_empty();
            } else if name.eq_ignore_ascii_case("accept-encoding") {
                s.has_accept_encoding = !value.trim().is_empty();
            } else if name.eq_ignore_ascii_case("sec-ch-ua") {
                s.sec_ch_ua = Some(value);
            }
        }
        s
    }
}

/// What the edge should do with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Serve normally (rate limits still apply).
    Allow,
    /// Require a proof-of-work clearance before serving.
    Challenge,
    /// Require a clearance and apply the strict per-source limits (or 429 outright).
    Limit,
    /// Refuse with 403.
    Block,
}

impl Action {
    pub fn code(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Challenge => "challenge",
            Self::Limit => "limit",
            Self::Block => "block",
        }
    }
}

/// A set of reason codes (a bit set, so scoring allocates nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Reasons(u16);

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident = $bit:literal, $code:literal;)*) => {
        impl Reasons {
            $($(#[$doc])* pub const $name: Self = Self(1 << $bit);)*
            const ALL: &'static [(Self, &'static str)] = &[$((Self::$name, $code)),*];
        }
    };
}

reasons! {
    /// No `User-Agent`, or an empty one.
    EMPTY_USER_AGENT = 0, "empty_user_agent";
    /// An HTTP library or command-line tool (curl, python-requests, Go-http-client…).
    AUTOMATION_CLIENT = 1, "automation_client";
    /// A headless or driven browser (HeadlessChrome, PhantomJS, Selenium, Puppeteer…).
    HEADLESS_BROWSER = 2, "headless_browser";
    /// A self-declared crawler (Googlebot, GPTBot, …; unverified).
    KNOWN_CRAWLER = 3, "known_crawler";
    /// A browser user agent without `Accept-Language`, which every browser sends.
    MISSING_ACCEPT_LANGUAGE = 4, "missing_accept_language";
    /// A browser user agent without `Accept-Encoding`.
    MISSING_ACCEPT_ENCODING = 5, "missing_accept_encoding";
    /// `Sec-CH-UA` contradicts the user agent (absent from modern Chrome over HTTPS,
    /// present for Firefox/Safari, or naming another version).
    CLIENT_HINTS_MISMATCH = 6, "client_hints_mismatch";
    /// Requests arrive like clockwork.
    MACHINE_TIMING = 7, "machine_timing";
    /// The source recently failed or abandoned challenges.
    FAILED_CHALLENGES = 8, "failed_challenges";
    /// The subnet has a bad reputation.
    BAD_SUBNET_REPUTATION = 9, "bad_subnet_reputation";
    /// The subnet is registering accounts unusually fast.
    SIGNUP_VELOCITY = 10, "signup_velocity";
}

impl Reasons {
    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The reason codes, in a fixed order.
    pub fn codes(self) -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().filter(move |(r, _)| self.contains(*r)).map(|(_, code)| *code)
    }
}

impl std::fmt::Display for Reasons {
    /// Comma-separated codes, e.g. `automation_client,machine_timing`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, code) in self.codes().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(code)?;
        }
        Ok(())
    }
}

/// The score, the action it maps to, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BotVerdict {
    /// 0 (looks human) ..= 100.
    pub score: u8,
    pub action: Action,
    pub reasons: Reasons,
}

/// Weights and thresholds. Every weight is points added to a 0..=100 score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotScoreConfig {
    pub empty_user_agent: u8,
    pub automation_client: u8,
    pub headless_browser: u8,
    pub known_crawler: u8,
    pub missing_accept_language: u8,
    pub missing_accept_encoding: u8,
    pub client_hints_mismatch: u8,
    pub machine_timing: u8,
    /// Points per failed challenge …
    pub failed_challenge: u8,
    /// … up to this many in total.
    pub failed_challenges_max: u8,
    /// Points at reputation 100, scaled linearly below it …
    pub bad_reputation: u8,
    /// … counted from this reputation up.
    pub reputation_floor: u8,
    pub signup_velocity: u8,
    /// Sign-ups per hour from one subnet that count as velocity.
    pub signups_per_hour: f32,
    /// Timing: at least this many gaps …
    pub timing_min_samples: u32,
    /// … with a coefficient of variation below this is machine-regular.
    pub timing_max_cv: f32,
    /// Score from which to challenge, limit and block.
    pub challenge_at: u8,
    pub limit_at: u8,
    pub block_at: u8,
}

impl Default for BotScoreConfig {
    fn default() -> Self {
        Self {
            empty_user_agent: 40,
            automation_client: 35,
            headless_browser: 60,
            known_crawler: 30,
            missing_accept_language: 15,
            missing_accept_encoding: 15,
            client_hints_mismatch: 25,
            machine_timing: 30,
            failed_challenge: 10,
            failed_challenges_max: 40,
            bad_reputation: 50,
            reputation_floor: 20,
            signup_velocity: 30,
            signups_per_hour: 20.0,
            timing_min_samples: 8,
            timing_max_cv: 0.1,
            challenge_at: 30,
            limit_at: 60,
            block_at: 90,
        }
    }
}

const AUTOMATION: &[&str] = &[
    "curl/",
    "wget/",
    "libcurl",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "httpx/",
    "go-http-client",
    "java/",
    "okhttp",
    "apache-httpclient",
    "libwww-perl",
    "scrapy",
    "node-fetch",
    "axios/",
    "undici",
    "powershell",
    "httpie",
    "guzzlehttp",
    "ruby",
    "http.rb",
    "reqwest",
    "hyper/",
    "winhttp",
];
const HEADLESS: &[&str] =
    &["headlesschrome", "phantomjs", "selenium", "webdriver", "puppeteer", "playwright", "slimerjs", "htmlunit"];
const CRAWLERS: &[&str] = &[
    "googlebot",
    "bingbot",
    "slurp",
    "duckduckbot",
    "baiduspider",
    "yandexbot",
    "applebot",
    "gptbot",
    "chatgpt-user",
    "oai-searchbot",
    "ccbot",
    "claudebot",
    "anthropic-ai",
    "perplexitybot",
    "bytespider",
    "amazonbot",
    "facebookexternalhit",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "dotbot",
    "petalbot",
    "crawler",
    "spider",
    "bot/",
    "+http",
];

/// User agents longer than this are judged on their first bytes (any browser fits).
const UA_SCAN_BYTES: usize = 512;

/// The score for one request.
pub fn score(signals: &RequestSignals<'_>, config: &BotScoreConfig) -> BotVerdict {
    let mut tally = Tally::default();

    let ua = signals.user_agent.map(str::trim).unwrap_or("");
    // Lower-cased copy on the stack: one pass, then plain substring searches.
    let mut buf = [0u8; UA_SCAN_BYTES];
    let n = ua.len().min(UA_SCAN_BYTES);
    buf[..n].copy_from_slice(&ua.as_bytes()[..n]);
    buf[..n].make_ascii_lowercase();
    let lower = match std::str::from_utf8(&buf[..n]) {
        Ok(s) => s,
        // Cut inside a multi-byte character: keep the valid prefix.
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
    };
    let has = |list: &[&str]| list.iter().any(|needle| lower.contains(needle));

    if lower.is_empty() {
        tally.add(Reasons::EMPTY_USER_AGENT, config.empty_user_agent);
    } else if has(HEADLESS) || signals.sec_ch_ua.is_some_and(|h| contains_ignore_case(h, b"headless")) {
        tally.add(Reasons::HEADLESS_BROWSER, config.headless_browser);
    } else if has(AUTOMATION) {
        tally.add(Reasons::AUTOMATION_CLIENT, config.automation_client);
    } else if has(CRAWLERS) {
        tally.add(Reasons::KNOWN_CRAWLER, config.known_crawler);
    }

    // Header anomalies only count against user agents that claim to be an ordinary browser;
    // a declared crawler or tool is not expected to send a browser's header set.
    if lower.contains("mozilla/") && !tally.flagged_agent() {
        if !signals.has_accept_language {
            tally.add(Reasons::MISSING_ACCEPT_LANGUAGE, config.missing_accept_language);
        }
        if !signals.has_accept_encoding {
            tally.add(Reasons::MISSING_ACCEPT_ENCODING, config.missing_accept_encoding);
        }
        if hints_mismatch(lower, signals) {
            tally.add(Reasons::CLIENT_HINTS_MISMATCH, config.client_hints_mismatch);
        }
    }

    if let Some(t) = signals.timing
        && t.samples >= config.timing_min_samples
        && t.cv < config.timing_max_cv
    {
        tally.add(Reasons::MACHINE_TIMING, config.machine_timing);
    }

    if signals.failed_challenges > 0 {
        let w = u32::from(config.failed_challenge).saturating_mul(signals.failed_challenges);
        let w = w.min(u32::from(config.failed_challenges_max)) as u8;
        tally.add(Reasons::FAILED_CHALLENGES, w);
    }

    let rep = signals.subnet_reputation.min(100);
    if rep >= config.reputation_floor && rep > 0 {
        tally.add(Reasons::BAD_SUBNET_REPUTATION, (u32::from(config.bad_reputation) * u32::from(rep) / 100) as u8);
    }

    if signals.subnet_signups_per_hour >= config.signups_per_hour {
        tally.add(Reasons::SIGNUP_VELOCITY, config.signup_velocity);
    }

    let score = tally.points.min(100) as u8;
    let action = if score >= config.block_at {
        Action::Block
    } else if score >= config.limit_at {
        Action::Limit
    } else if score >= config.challenge_at {
        Action::Challenge
    } else {
        Action::Allow
    };
    BotVerdict { score, action, reasons: tally.reasons }
}

#[derive(Default)]
struct Tally {
    reasons: Reasons,
    points: u32,
}

impl Tally {
    fn add(&mut self, reason: Reasons, weight: u8) {
        if weight > 0 {
            self.reasons.insert(reason);
            self.points += u32::from(weight);
        }
    }

    fn flagged_agent(&self) -> bool {
        let agent = Reasons(
            Reasons::EMPTY_USER_AGENT.0
                | Reasons::AUTOMATION_CLIENT.0
                | Reasons::HEADLESS_BROWSER.0
                | Reasons::KNOWN_CRAWLER.0,
        );
        self.reasons.0 & agent.0 != 0
    }
}

fn contains_ignore_case(hay: &str, needle: &[u8]) -> bool {
    hay.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

/// The Chrome major version in a lower-cased user agent (`… chrome/124.0.0.0 …`).
fn chrome_major(lower: &str) -> Option<u32> {
    let (_, rest) = lower.split_once("chrome/")?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    if digits.is_empty() || digits.len() > 4 { None } else { digits.parse().ok() }
}

fn hints_mismatch(lower: &str, s: &RequestSignals<'_>) -> bool {
    let firefox = lower.contains("firefox/");
    let chrome = chrome_major(lower);
    let webkit_only = lower.contains("safari/") && chrome.is_none() && !lower.contains("chromium/");
    match (s.sec_ch_ua, chrome) {
        // Firefox and Safari never send client hints.
        (Some(_), _) if firefox || webkit_only => true,
        // Chromium 89+ sends Sec-CH-UA on every secure request.
        (None, Some(major)) => s.https && major >= 89,
        // The brand list must carry the same major version as the user agent.
        (Some(hints), Some(major)) => !brand_versions(hints).any(|v| v == major),
        _ => false,
    }
}

/// The `v="…"` versions of a `Sec-CH-UA` brand list.
fn brand_versions(hints: &str) -> impl Iterator<Item = u32> + '_ {
    hints.split("v=\"").skip(1).filter_map(|rest| rest.split('"').next()?.split('.').next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
    const CHROME_HINTS: &str = r#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#;
    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
    const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";

    fn browser<'a>(ua: &'a str, hints: Option<&'a str>) -> RequestSignals<'a> {
        let mut headers =
            vec![("User-Agent", ua), ("Accept-Language", "en-GB,en;q=0.9"), ("accept-encoding", "gzip, br")];
        if let Some(h) = hints {
            headers.push(("sec-ch-ua", h));
        }
        RequestSignals::from_headers(headers, true)
    }

    fn verdict(s: &RequestSignals<'_>) -> BotVerdict {
        score(s, &BotScoreConfig::default())
    }

    #[test]
    fn real_browsers_are_allowed() {
        for s in [browser(CHROME, Some(CHROME_HINTS)), browser(FIREFOX, None), browser(SAFARI, None)] {
            let v = verdict(&s);
            assert_eq!((v.score, v.action, v.reasons), (0, Action::Allow, Reasons::empty()), "{s:?}");
        }
    }

    #[test]
    fn tools_and_headless_browsers_are_named() {
        let cases = [
            ("curl/8.5.0", Reasons::AUTOMATION_CLIENT, Action::Challenge),
            ("python-requests/2.31.0", Reasons::AUTOMATION_CLIENT, Action::Challenge),
            ("Go-http-client/1.1", Reasons::AUTOMATION_CLIENT, Action::Challenge),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Reasons::KNOWN_CRAWLER,
                Action::Challenge,
            ),
        ];
        for (ua, reason, action) in cases {
            let v = verdict(&RequestSignals::from_headers([("user-agent", ua)], true));
            assert!(v.reasons.contains(reason), "{ua}: {}", v.reasons);
            assert_eq!(v.action, action, "{ua}: {} {}", v.score, v.reasons);
        }
        let headless = CHROME.replace("Chrome/", "HeadlessChrome/");
        let v = verdict(&browser(&headless, Some(CHROME_HINTS)));
        assert!(v.reasons.contains(Reasons::HEADLESS_BROWSER));
        assert_eq!(v.action, Action::Limit);
        let v = verdict(&RequestSignals::default());
        assert_eq!(v.reasons.to_string(), "empty_user_agent");
    }

    #[test]
    fn header_sets_no_browser_sends_are_flagged() {
        let bare = RequestSignals::from_headers([("user-agent", CHROME)], true);
        let v = verdict(&bare);
        assert_eq!(v.reasons.to_string(), "missing_accept_language,missing_accept_encoding,client_hints_mismatch");
        assert_eq!((v.score, v.action), (55, Action::Challenge));
        let plain_http = RequestSignals::from_headers(
            [("user-agent", CHROME), ("accept-language", "en"), ("accept-encoding", "gzip")],
            false,
        );
        assert_eq!(verdict(&plain_http).action, Action::Allow, "no hints expected without TLS");
        assert!(verdict(&browser(FIREFOX, Some(CHROME_HINTS))).reasons.contains(Reasons::CLIENT_HINTS_MISMATCH));
        assert!(verdict(&browser(SAFARI, Some(CHROME_HINTS))).reasons.contains(Reasons::CLIENT_HINTS_MISMATCH));
        let wrong_version = r#""Chromium";v="110", "Not-A.Brand";v="99""#;
        assert!(verdict(&browser(CHROME, Some(wrong_version))).reasons.contains(Reasons::CLIENT_HINTS_MISMATCH));
    }

    #[test]
    fn behaviour_signals_add_up_to_a_block() {
        let mut s = browser(CHROME, Some(CHROME_HINTS));
        s.timing = Some(TimingStats { samples: 20, mean_ms: 1000.0, cv: 0.02 });
        s.failed_challenges = 3;
        s.subnet_reputation = 80;
        s.subnet_signups_per_hour = 50.0;
        let v = verdict(&s);
        assert_eq!(v.reasons.to_string(), "machine_timing,failed_challenges,bad_subnet_reputation,signup_velocity");
        assert_eq!((v.score, v.action), (100, Action::Block));
        s.timing = Some(TimingStats { samples: 3, mean_ms: 1000.0, cv: 0.0 });
        s.failed_challenges = 0;
        s.subnet_reputation = 10;
        s.subnet_signups_per_hour = 1.0;
        assert_eq!(verdict(&s).action, Action::Allow, "too few samples, low reputation");
    }

    #[test]
    fn odd_user_agents_do_not_panic() {
        let long = format!("{}é{}", "a".repeat(511), "x".repeat(10_000));
        for ua in [long.as_str(), "\u{0}", "Chrome/", "Chrome/99999999999 Mozilla/", "ÄÖÜ mozilla/"] {
            let _ = verdict(&RequestSignals::from_headers([("user-agent", ua)], true));
        }
        assert_eq!(Reasons::ALL.len(), 11);
        let codes: std::collections::HashSet<_> = Reasons::ALL.iter().map(|(_, c)| c).collect();
        assert_eq!(codes.len(), 11, "codes are distinct");
    }
}
