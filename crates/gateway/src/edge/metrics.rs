//! The edge guard's decisions as Prometheus counters: `action` × `reason`, both from
//! fixed lists (the reason codes are shield's stable snake_case codes), so a flood can
//! never add a series.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the guard did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeAction {
    Allow,
    Challenge,
    Limit,
    Block,
    /// Sent to the registration waiting room.
    Queue,
}

impl EdgeAction {
    pub const ALL: [EdgeAction; 5] =
        [EdgeAction::Allow, EdgeAction::Challenge, EdgeAction::Limit, EdgeAction::Block, EdgeAction::Queue];

    pub fn label(self) -> &'static str {
        match self {
            EdgeAction::Allow => "allow",
            EdgeAction::Challenge => "challenge",
            EdgeAction::Limit => "limit",
            EdgeAction::Block => "block",
            EdgeAction::Queue => "queue",
        }
    }
}

/// Every reason code the guard reports. Unknown codes count as `other`.
pub const REASONS: [&str; 51] = [
    // allowed
    "passed",
    "identified",
    "allow_listed",
    "cleared",
    "admission_pass",
    // lists and limits
    "blocklist",
    "source_limit",
    "account_limit",
    "api_key_limit",
    "concurrency_limit",
    "route_limit",
    "under_attack",
    // bot score (shield::Reasons)
    "empty_user_agent",
    "automation_client",
    "headless_browser",
    "known_crawler",
    "missing_accept_language",
    "missing_accept_encoding",
    "client_hints_mismatch",
    "machine_timing",
    "failed_challenges",
    "bad_subnet_reputation",
    "signup_velocity",
    // clearances
    "no_clearance",
    "clearance_malformed",
    "clearance_forged",
    "clearance_expired",
    "clearance_wrong_client",
    "clearance_budget_spent",
    // challenge answers
    "pow_solved",
    "pow_malformed",
    "pow_forged",
    "pow_expired",
    "pow_wrong_client",
    "pow_bad_nonce",
    "pow_insufficient_work",
    "pow_replayed",
    "pow_busy",
    // waiting room
    "waiting_room_joined",
    "waiting_room_full",
    "waiting_room_malformed",
    "waiting_room_forged",
    "waiting_room_wrong_client",
    "admission_pass_expired",
    "pass_replayed",
    "ticket_expired",
    "ticket_admitted",
    "ticket_waiting",
    "bot_score",
    "attack_mode",
    "other",
];

pub struct EdgeMetrics {
    decisions: Box<[AtomicU64]>,
    /// Transitions into (0) and out of (1) attack mode.
    pub transitions: [AtomicU64; 2],
    /// Budget tokens given back (0) and charged on top (1) once replies reported usage.
    settled: [AtomicU64; 2],
    /// Replies whose usage settled their charge.
    settlements: AtomicU64,
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics {
            decisions: (0..EdgeAction::ALL.len() * REASONS.len()).map(|_| AtomicU64::new(0)).collect(),
            transitions: Default::default(),
            settled: Default::default(),
            settlements: AtomicU64::new(0),
        }
    }
}

fn reason_index(code: &str) -> usize {
    REASONS.iter().position(|r| *r == code).unwrap_or(REASONS.len() - 1)
}

impl EdgeMetrics {
    pub fn record(&self, action: EdgeAction, reason: &str) {
        self.decisions[action as usize * REASONS.len() + reason_index(reason)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, action: EdgeAction, reason: &str) -> u64 {
        self.decisions[action as usize * REASONS.len() + reason_index(reason)].load(Ordering::Relaxed)
    }

    /// A reply's usage settled a charge of `charged` tokens at `actual`.
    pub fn settled_tokens(&self, charged: u32, actual: u32) {
        self.settlements.fetch_add(1, Ordering::Relaxed);
        if actual < charged {
            self.settled[0].fetch_add(u64::from(charged - actual), Ordering::Relaxed);
        } else {
            self.settled[1].fetch_add(u64::from(actual - charged), Ordering::Relaxed);
        }
    }

    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP palisade_edge_decisions_total Edge guard decisions, by action and reason code.\n");
        out.push_str("# TYPE palisade_edge_decisions_total counter\n");
        for action in EdgeAction::ALL {
            for reason in REASONS {
                let n = self.count(action, reason);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "palisade_edge_decisions_total{{action=\"{}\",reason=\"{reason}\"}} {n}",
                        action.label()
                    );
                }
            }
        }
        out.push_str("# HELP palisade_edge_attack_transitions_total Attack-mode changes, by the mode entered.\n");
        out.push_str("# TYPE palisade_edge_attack_transitions_total counter\n");
        for (i, to) in ["under_attack", "normal"].iter().enumerate() {
            let n = self.transitions[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "palisade_edge_attack_transitions_total{{to=\"{to}\"}} {n}");
        }
        out.push_str("# HELP palisade_token_budget_settlements_total Replies whose reported usage settled the up-front charge.\n");
        out.push_str("# TYPE palisade_token_budget_settlements_total counter\n");
        let _ = writeln!(out, "palisade_token_budget_settlements_total {}", self.settlements.load(Ordering::Relaxed));
        out.push_str(
            "# HELP palisade_token_budget_settled_tokens_total Budget tokens settled after the reply, by direction.\n",
        );
        out.push_str("# TYPE palisade_token_budget_settled_tokens_total counter\n");
        for (i, direction) in ["refunded", "charged"].iter().enumerate() {
            let n = self.settled[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "palisade_token_budget_settled_tokens_total{{direction=\"{direction}\"}} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reasons_fold_into_other_and_render() {
        let m = EdgeMetrics::default();
        m.record(EdgeAction::Block, "blocklist");
        m.record(EdgeAction::Challenge, "no such code");
        assert_eq!(m.count(EdgeAction::Challenge, "other"), 1);
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("palisade_edge_decisions_total{action=\"block\",reason=\"blocklist\"} 1"), "{text}");
        use shield::Reasons as R;
        let mut all = R::empty();
        for r in [
            R::EMPTY_USER_AGENT,
            R::AUTOMATION_CLIENT,
            R::HEADLESS_BROWSER,
            R::KNOWN_CRAWLER,
            R::MISSING_ACCEPT_LANGUAGE,
            R::MISSING_ACCEPT_ENCODING,
            R::CLIENT_HINTS_MISMATCH,
            R::MACHINE_TIMING,
            R::FAILED_CHALLENGES,
            R::BAD_SUBNET_REPUTATION,
            R::SIGNUP_VELOCITY,
        ] {
            all.insert(r);
        }
        assert_eq!(all.codes().count(), 11);
        for code in all.codes() {
            assert!(REASONS.contains(&code), "{code}");
        }
    }
}
