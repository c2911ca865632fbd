//! The gateway's way into the audit log. Operator actions and account flows are
//! written and awaited ([`AuditLog::record`]); events that any request can cause (a
//! refusal at the edge, a flagged prompt, a stopped leak) are sampled
//! ([`AuditLog::sample`]): at most one per source a minute and ten a second in all,
//! written in the background, so a flood can neither flood the log nor wait on it.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use accounts::service::Accounts;
use shield::{Gcra, Key, LimiterTable};

/// One entry. `detail` holds no secrets and no personal data.
#[derive(Debug)]
pub struct Event {
    pub actor: String,
    pub action: &'static str,
    pub outcome: &'static str,
    pub ip: Option<IpAddr>,
    pub reason: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl Event {
    pub fn new(actor: impl Into<String>, action: &'static str, outcome: &'static str) -> Event {
        Event { actor: actor.into(), action, outcome, ip: None, reason: None, detail: None }
    }

    pub fn ip(mut self, ip: IpAddr) -> Event {
        self.ip = Some(ip);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Event {
        self.detail = Some(detail);
        self
    }
}

/// Who a request's audit entries name: its account, or "anonymous". Kept as the id and
/// spelled out only when an entry is written, which is rare.
#[derive(Clone, Copy, Debug)]
pub struct Actor(pub Option<i64>);

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(user_id) => write!(f, "user:{user_id}"),
            None => f.write_str("anonymous"),
        }
    }
}

pub struct AuditLog {
    /// `None` only in unit tests, which have no store.
    accounts: Option<Arc<Accounts>>,
    per_source: LimiterTable,
    per_source_rate: Gcra,
    total: Mutex<u64>,
    total_rate: Gcra,
}

impl AuditLog {
    pub fn new(accounts: Arc<Accounts>) -> AuditLog {
        AuditLog::with(Some(accounts))
    }

    fn with(accounts: Option<Arc<Accounts>>) -> AuditLog {
        AuditLog {
            accounts,
            per_source: LimiterTable::new(4096),
            per_source_rate: Gcra::new(Duration::from_secs(60), 1).unwrap_or_else(|_| unreachable!("constant")),
            total: Mutex::new(0),
            total_rate: Gcra::new(Duration::from_millis(100), 50).unwrap_or_else(|_| unreachable!("constant")),
        }
    }

    /// Write `event` and wait for the store.
    pub async fn record(&self, event: Event) {
        if let Some(accounts) = &self.accounts {
            write(accounts, event).await;
        }
    }

    /// Write the event `make` builds, in the background, if `source` and the log as a
    /// whole are under their rates; otherwise drop it (its counters still count it).
    pub fn sample(&self, source: Key, now: Duration, make: impl FnOnce() -> Event) {
        if !self.allowed(source, now) {
            return;
        }
        let Some(accounts) = self.accounts.clone() else { return };
        let event = make();
        tokio::spawn(async move { write(&accounts, event).await });
    }

    fn allowed(&self, source: Key, now: Duration) -> bool {
        if !self.per_source.check(source, &self.per_source_rate, now, 1).allowed {
            return false;
        }
        let mut tat = self.total.lock().unwrap_or_else(PoisonError::into_inner);
        self.total_rate.check(&mut tat, now, 1).allowed
    }
}

async fn write(accounts: &Accounts, e: Event) {
    accounts.audit(&e.actor, e.action, e.outcome, e.ip, e.reason.as_deref(), e.detail).await;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log for unit tests of parts that audit: it samples, then writes nothing.
    pub(crate) fn log() -> Arc<AuditLog> {
        Arc::new(AuditLog::with(None))
    }

    #[test]
    fn sampling_allows_one_event_per_source_a_minute() {
        let log = AuditLog::with(None);
        let t = Duration::from_secs(1_000);
        assert!(log.allowed(Key::account(1), t));
        assert!(!log.allowed(Key::account(1), t + Duration::from_secs(30)));
        assert!(log.allowed(Key::account(2), t));
        assert!(log.allowed(Key::account(1), t + Duration::from_secs(61)));
    }

    #[test]
    fn sampling_caps_the_log_as_a_whole() {
        let log = AuditLog::with(None);
        let t = Duration::from_secs(1_000);
        let allowed = (0..1_000u64).filter(|i| log.allowed(Key::account(*i), t)).count();
        assert_eq!(allowed, 50, "a burst of fifty, then ten a second");
    }
}
