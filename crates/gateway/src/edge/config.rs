//! The `[shield]` section: the shield crate's policy (limits, proof-of-work, bot score,
//! attack detection, waiting room) plus the settings only the HTTP edge has (which peers
//! may speak for a client, where the signing key lives, where challenges apply).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use shield::{AttackConfig, BlockListConfig, BotScoreConfig, Cidr, LimitsConfig, PowConfig, WaitingRoomConfig};

use crate::request::Zone;
use crate::validation::InvalidField;

/// The `[shield]` section: everything the edge reads. Every default makes `palisade
/// serve` work alone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShieldConfig {
    /// Master switch. Off: no block list, limits, challenges or waiting room (for
    /// benchmarks and for deployments with another edge in front).
    pub enabled: bool,
    /// Peers (CIDRs) allowed to state the client's address in `X-Forwarded-For` or a
    /// PROXY protocol header. From anyone else those are ignored.
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol v1/v2 header on connections from `trusted_proxies`: the
    /// address it names is the client's. A connection from them without one is closed.
    pub proxy_protocol: bool,
    /// File holding the 32-byte key that signs challenges, clearances and tickets (64 hex
    /// characters); default `<data_dir>/shield.key`, generated on first start. Every
    /// gateway node must share it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The key itself as 64 hex characters (e.g. PALISADE_SHIELD__SECRET); wins over
    /// `secret_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub challenge: ChallengePolicy,
    pub registration: RegistrationGuard,
    pub blocklist: BlockListConfig,
    pub limits: LimitsConfig,
    pub pow: PowConfig,
    pub bot: BotScoreConfig,
    pub attack: AttackConfig,
    pub waiting_room: WaitingRoomConfig,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        let shield = shield::ShieldConfig::default();
        ShieldConfig {
            enabled: true,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            secret_file: None,
            secret: None,
            challenge: ChallengePolicy::default(),
            registration: RegistrationGuard::default(),
            blocklist: shield.blocklist,
            limits: shield.limits,
            pow: shield.pow,
            bot: shield.bot,
            attack: shield.attack,
            waiting_room: shield.waiting_room,
        }
    }
}

/// Where a bot-score verdict of `challenge` (or worse) asks for a proof-of-work clearance.
/// Requests with a valid API key or session are never scored or challenged.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChallengePolicy {
    /// Anonymous requests to `/auth/*` (registration, login, verification).
    pub auth: bool,
    /// Anonymous requests to `/v1/*` (only reachable when `auth.allow_anonymous_inference`).
    pub anonymous_inference: bool,
}

impl Default for ChallengePolicy {
    fn default() -> Self {
        ChallengePolicy { auth: true, anonymous_inference: true }
    }
}

/// Extra rules for `POST /auth/register`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationGuard {
    /// Under attack, every registration needs a clearance, whatever its bot score.
    pub clearance_under_attack: bool,
    /// When the `register` route limit refuses, hand out a waiting-room ticket (202)
    /// instead of a 429.
    pub waiting_room: bool,
}

impl Default for RegistrationGuard {
    fn default() -> Self {
        RegistrationGuard { clearance_under_attack: true, waiting_room: true }
    }
}

impl ShieldConfig {
    /// The shield crate's part of this section: its rules without the HTTP settings.
    pub fn rules(&self) -> shield::ShieldConfig {
        shield::ShieldConfig {
            blocklist: self.blocklist.clone(),
            limits: self.limits.clone(),
            pow: self.pow.clone(),
            bot: self.bot.clone(),
            attack: self.attack.clone(),
            waiting_room: self.waiting_room.clone(),
        }
    }

    /// The trusted proxy ranges, parsed (bad entries are reported by [`Self::validate`]).
    pub fn trusted(&self) -> Vec<Cidr> {
        self.trusted_proxies.iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// Reports every bad field, named from the top of the file (`shield.…`).
    pub fn validate(&self, out: &mut Vec<InvalidField>) {
        if let Err(e) = self.rules().validate() {
            out.push(InvalidField { field: format!("shield.{}", e.field), reason: e.problem });
        }
        for (i, r) in self.limits.routes.iter().enumerate() {
            if !Zone::ALL.iter().any(|z| z.name() == r.route) {
                let names: Vec<_> = Zone::ALL.iter().map(|z| z.name()).collect();
                out.push(InvalidField {
                    field: format!("shield.limits.routes[{i}].route"),
                    reason: format!("`{}` is not one of {}", r.route, names.join(", ")),
                });
            }
        }
        for (i, text) in self.trusted_proxies.iter().enumerate() {
            if let Err(e) = text.parse::<Cidr>() {
                out.push(InvalidField { field: format!("shield.trusted_proxies[{i}]"), reason: e.to_string() });
            }
        }
        if let Some(secret) = &self.secret
            && parse_secret(secret).is_none()
        {
            out.push(InvalidField {
                field: "shield.secret".into(),
                reason: "must be 64 hex characters (32 bytes)".into(),
            });
        }
    }
}

/// A 32-byte key from 64 hex characters (surrounding whitespace ignored).
pub fn parse_secret(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        key[i] = (hi * 16 + lo) as u8;
    }
    Some(key)
}

/// The key as 64 lower-case hex characters (for the key file).
pub fn format_secret(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_field() {
        let mut out = Vec::new();
        ShieldConfig::default().validate(&mut out);
        assert!(out.is_empty(), "{out:?}");
        let mut bad = ShieldConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0.1/8".into()],
            secret: Some("abc".into()),
            ..ShieldConfig::default()
        };
        bad.limits.per_ip.burst = 0;
        bad.validate(&mut out);
        let fields: Vec<_> = out.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["shield.limits.per_ip.burst", "shield.trusted_proxies[1]", "shield.secret"]);
    }

    #[test]
    fn secrets_round_trip_through_hex() {
        let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(parse_secret(&format_secret(&key)), Some(key));
        assert_eq!(parse_secret(&"g".repeat(64)), None);
    }
}
