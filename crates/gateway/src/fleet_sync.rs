//! Keeps this node's switches in step with the fleet (only with `shared_state`): every
//! `fleet.poll_ms` it tells the fleet about credentials revoked, registration policy
//! changed and strikes given or forgiven here, reads every switch's version (one round
//! trip), and applies what changed elsewhere: list entries, the attack-mode override,
//! forgotten credentials, the policy, the strikes.
//! Lists and the attack override are published by the operator's handlers directly
//! (`Edge::publish_rule`, `Edge::publish_attack`); see `fleet::switches` for why this is
//! a poll and not pub/sub.

use std::sync::Arc;
use std::time::Duration;

use accounts::service::{Accounts, LocalChanges};
use fleet::{Fleet, Switch, SwitchVersions};

use crate::abuse::{StrikeChange, Strikes};
use crate::clock::now;
use crate::edge::shared::decode_rule;
use crate::edge::{AttackSwitch, Edge};

/// Runs until aborted. `on_change` hears an applied attack-mode change (the status page
/// re-renders).
pub async fn run(
    fleet: Arc<Fleet>,
    edge: Arc<Edge>,
    accounts: Arc<Accounts>,
    strikes: Arc<Strikes>,
    every: Duration,
    on_change: impl Fn(),
) {
    // Local changes are looked for five times per read (two atomic loads), so a
    // revocation here costs the fleet one fifth of a poll before it is published.
    const LOOKS_PER_READ: u32 = 5;
    let mut tick = tokio::time::interval(every / LOOKS_PER_READ);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u32 = 0;
    // Version 0 everywhere: the first read applies every switch ever set, so a node
    // that starts (or restarts) picks up the fleet's lists and override.
    let mut seen = SwitchVersions::default();
    let mut published = accounts.changes();
    loop {
        tick.tick().await;
        if !fleet.is_up() {
            continue;
        }
        published = publish(&fleet, &accounts, published).await;
        publish_strikes(&fleet, &strikes).await;
        ticks = ticks.wrapping_add(1);
        if !ticks.is_multiple_of(LOOKS_PER_READ) {
            continue;
        }
        let Ok(versions) = fleet.versions().await else { continue };
        let mut applied = true;
        for switch in versions.changed_since(&seen) {
            applied &= apply(switch, &fleet, &edge, &accounts, &strikes, &on_change).await;
        }
        // A switch that failed to apply is read again on the next tick.
        if applied {
            seen = versions;
        }
    }
}

/// Bumps the fleet's versions for this node's own changes; returns what is published.
async fn publish(fleet: &Fleet, accounts: &Accounts, mut published: LocalChanges) -> LocalChanges {
    let current = accounts.changes();
    if current.credentials != published.credentials && fleet.bump(Switch::Credentials).await.is_ok() {
        published.credentials = current.credentials;
    }
    if current.policy != published.policy && fleet.bump(Switch::Registration).await.is_ok() {
        published.policy = current.policy;
    }
    published
}

/// Sends the strikes given and forgiven here; a change the fleet did not take is
/// counted on this node only.
async fn publish_strikes(fleet: &Fleet, strikes: &Strikes) {
    for change in strikes.take_changes() {
        let sent = match change {
            StrikeChange::Added { who, reason } => fleet.add_strike(who, reason, strikes.window()).await.map(|_| ()),
            StrikeChange::Cleared { who } => fleet.clear_strikes(who).await,
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "a strike holds on this node only: the shared state did not take it");
            return;
        }
    }
}

async fn apply(
    switch: Switch,
    fleet: &Fleet,
    edge: &Edge,
    accounts: &Accounts,
    strikes: &Strikes,
    on_change: &impl Fn(),
) -> bool {
    match switch {
        Switch::Strikes => match fleet.strikes().await {
            Ok(records) => {
                let records = records.into_iter().map(|r| (r.caller, r.count, r.reason, r.first_ago, r.last_ago));
                strikes.replace(records, std::time::Instant::now());
                true
            }
            Err(_) => false,
        },
        Switch::Lists => match fleet.list_rules().await {
            Ok(rules) => {
                let entries: Vec<_> = rules.iter().filter_map(|(f, v)| decode_rule(f, v)).collect();
                edge.replace_rules(&entries, now());
                true
            }
            Err(_) => false,
        },
        Switch::Attack => match fleet.attack_override().await {
            Ok(value) => {
                if let Some(switch) = value.as_deref().and_then(AttackSwitch::parse)
                    && let Some(t) = edge.force(switch, now())
                {
                    tracing::info!(mode = ?t.to, "attack mode set by an operator on another node");
                    on_change();
                }
                true
            }
            Err(_) => false,
        },
        Switch::Credentials => {
            accounts.forget_cached_credentials();
            true
        }
        Switch::Registration => match accounts.reload_policy().await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "the registration policy changed on another node but could not be read");
                false
            }
        },
    }
}
