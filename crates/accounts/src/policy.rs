//! Who may register right now: the operator's switch for an attack or a flash crowd.
//! It is consulted only for new accounts; login is never affected.

use serde::{Deserialize, Serialize};

/// An ISO 3166-1 alpha-2 region code, exactly two ASCII upper-case letters (`CN`).
///
/// Lower case is refused rather than fixed up, so the configuration says what the
/// policy does literally, and the comparison with [`crate::phone::Phone::region`] (which
/// is always upper case) is plain equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("region code {0:?} is not two upper-case letters (ISO 3166-1 alpha-2, e.g. \"CN\")")]
pub struct InvalidRegion(String);

impl Region {
    pub fn new(code: &str) -> Result<Self, InvalidRegion> {
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(code.to_owned()))
        } else {
            Err(InvalidRegion(code.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Region {
    type Error = InvalidRegion;
    fn try_from(code: String) -> Result<Self, InvalidRegion> {
        Self::new(&code)
    }
}

impl From<Region> for String {
    fn from(region: Region) -> String {
        region.0
    }
}

/// The registration switch. Serialised with a `mode` tag:
/// `{"mode":"open"}`, `{"mode":"regions","allow":["CN"]}`, `{"mode":"invite_only"}`,
/// `{"mode":"closed","message":"..."}`. Every restricted mode takes an optional
/// operator's `message`: shown to refused visitors (after the rule for `regions` and
/// `invite_only`, instead of the default for `closed`) and on the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", try_from = "PolicyFields")]
pub enum RegistrationPolicy {
    /// Anyone may register.
    #[default]
    Open,
    /// Only with a phone number from one of these regions (never empty).
    Regions {
        allow: Vec<Region>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Only with an invitation.
    InviteOnly {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Nobody may register; `message` replaces the default explanation.
    Closed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// The shape as written, before the checks that serde attributes cannot express.
#[derive(Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
enum PolicyFields {
    // Empty braces rather than unit variants: serde enforces deny_unknown_fields only on
    // struct variants, and `{"mode":"open","allow":[..]}` is a mistake worth reporting.
    Open {},
    Regions {
        allow: Vec<Region>,
        #[serde(default)]
        message: Option<String>,
    },
    InviteOnly {
        #[serde(default)]
        message: Option<String>,
    },
    Closed {
        #[serde(default)]
        message: Option<String>,
    },
}

impl TryFrom<PolicyFields> for RegistrationPolicy {
    type Error = &'static str;
    fn try_from(fields: PolicyFields) -> Result<Self, Self::Error> {
        Ok(match fields {
            PolicyFields::Open {} => Self::Open,
            PolicyFields::Regions { allow, .. } if allow.is_empty() => {
                return Err("`allow` is empty: list at least one region, or use {\"mode\":\"closed\"}");
            }
            PolicyFields::Regions { allow, message } => Self::Regions { allow, message: given(message) },
            PolicyFields::InviteOnly { message } => Self::InviteOnly { message: given(message) },
            PolicyFields::Closed { message } => Self::Closed { message: given(message) },
        })
    }
}

/// A blank message is no message.
fn given(message: Option<String>) -> Option<String> {
    message.filter(|m| !m.trim().is_empty())
}

/// Why a registration was refused. [`code`](Self::code) is stable; the `Display` text is
/// shown to the person and says what the rule is, then the operator's message if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationRefused {
    #[error("{}", message.as_deref().unwrap_or("New registrations are paused. If you already have an account, you can still sign in."))]
    Closed { message: Option<String> },
    #[error("New registrations are limited to phone numbers from: {}{}", list(allow), then(message.as_deref()))]
    RegionNotAllowed { allow: Vec<Region>, message: Option<String> },
    #[error("New registrations currently need a phone number from: {}{}", list(allow), then(message.as_deref()))]
    PhoneRequired { allow: Vec<Region>, message: Option<String> },
    #[error("New registrations currently need an invitation.{}", message.as_deref().map(|m| format!(" {m}")).unwrap_or_default())]
    InviteRequired { message: Option<String> },
    #[error(
        "Sign-ups by text message to this number range are paused for now: sign up with an e-mail address, or try again later."
    )]
    TextsPaused,
    #[error(
        "Few of the codes sent by text to this number range are entered, so a text needs an extra check first: \
         solve the proof-of-work challenge in `challenge` and repeat the request with the header \
         `X-Palisade-Proof: <token> <nonce>` (or sign up with an e-mail address)."
    )]
    TextsNeedProof,
}

fn list(regions: &[Region]) -> String {
    regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
}

/// The operator's message after a rule that ends without a full stop.
fn then(message: Option<&str>) -> String {
    message.map(|m| format!(". {m}")).unwrap_or_default()
}

impl RegistrationRefused {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "registration_closed",
            Self::RegionNotAllowed { .. } => "region_not_allowed",
            Self::PhoneRequired { .. } => "phone_required_for_region_policy",
            Self::InviteRequired { .. } => "invite_required",
            Self::TextsPaused => "sms_paused",
            Self::TextsNeedProof => "sms_proof_required",
        }
    }
}

impl RegistrationPolicy {
    /// Builds a region policy, refusing an empty list (which would be `Closed` in
    /// disguise, with a misleading message).
    pub fn regions(allow: Vec<Region>) -> Option<Self> {
        (!allow.is_empty()).then_some(Self::Regions { allow, message: None })
    }

    /// Decides one registration. `phone_region` is [`crate::phone::Phone::region`] of
    /// the verified phone number, if the registration has one. An invitation matters only
    /// in `invite_only` mode; it does not lift a region limit or a closure.
    pub fn check(&self, phone_region: Option<&str>, has_invite: bool) -> Result<(), RegistrationRefused> {
        match self {
            Self::Open => Ok(()),
            Self::Closed { message } => Err(RegistrationRefused::Closed { message: message.clone() }),
            Self::InviteOnly { .. } if has_invite => Ok(()),
            Self::InviteOnly { message } => Err(RegistrationRefused::InviteRequired { message: message.clone() }),
            Self::Regions { allow, message } => match phone_region {
                None => Err(RegistrationRefused::PhoneRequired { allow: allow.clone(), message: message.clone() }),
                Some(region) if allow.iter().any(|r| r.as_str() == region) => Ok(()),
                Some(_) => {
                    Err(RegistrationRefused::RegionNotAllowed { allow: allow.clone(), message: message.clone() })
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> RegistrationPolicy {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn refused(p: &RegistrationPolicy, region: Option<&str>, invite: bool) -> (&'static str, String) {
        let e = p.check(region, invite).expect_err("should refuse");
        (e.code(), e.to_string())
    }

    #[test]
    fn serde_shapes_round_trip() {
        for json in [
            r#"{"mode":"open"}"#,
            r#"{"mode":"regions","allow":["CN"]}"#,
            r#"{"mode":"regions","allow":["CN","HK"]}"#,
            r#"{"mode":"invite_only"}"#,
            r#"{"mode":"closed","message":"Back at 18:00 UTC."}"#,
            r#"{"mode":"closed"}"#,
            r#"{"mode":"regions","allow":["CN"],"message":"Launch week."}"#,
            r#"{"mode":"invite_only","message":"Invites on Monday."}"#,
        ] {
            let p = policy(json);
            assert_eq!(serde_json::to_string(&p).expect("serialises"), json);
        }
        assert_eq!(RegistrationPolicy::default(), RegistrationPolicy::Open);
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let cases = [
            (r#"{"mode":"regions","allow":["cn"]}"#, "two upper-case letters"),
            (r#"{"mode":"regions","allow":["CHN"]}"#, "two upper-case letters"),
            (r#"{"mode":"regions","allow":["中国"]}"#, "two upper-case letters"),
            (r#"{"mode":"regions","allow":[]}"#, "at least one region"),
            (r#"{"mode":"regions"}"#, "allow"),
            (r#"{"mode":"sometimes"}"#, "sometimes"),
            (r#"{"mode":"open","allow":["CN"]}"#, "allow"),
            (r#"{}"#, "mode"),
        ];
        for (json, needle) in cases {
            let err = serde_json::from_str::<RegistrationPolicy>(json).expect_err(json).to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn open_admits_everyone() {
        assert_eq!(RegistrationPolicy::Open.check(None, false), Ok(()));
        assert_eq!(RegistrationPolicy::Open.check(Some("US"), false), Ok(()));
    }

    #[test]
    fn regions_policy() {
        let p = policy(r#"{"mode":"regions","allow":["CN"]}"#);
        assert_eq!(p.check(Some("CN"), false), Ok(()));
        assert_eq!(
            refused(&p, Some("US"), false),
            ("region_not_allowed", "New registrations are limited to phone numbers from: CN".to_owned())
        );
        assert_eq!(
            refused(&p, None, true),
            ("phone_required_for_region_policy", "New registrations currently need a phone number from: CN".to_owned())
        );
        assert_eq!(refused(&p, Some("US"), true).0, "region_not_allowed", "an invite does not lift the region limit");
        assert_eq!(refused(&p, Some("cn"), false).0, "region_not_allowed", "regions are compared exactly");
        let two = RegistrationPolicy::regions(vec![Region::new("CN").expect("CN"), Region::new("HK").expect("HK")])
            .expect("non-empty");
        assert!(refused(&two, Some("FR"), false).1.ends_with("from: CN, HK"));
        assert_eq!(RegistrationPolicy::regions(Vec::new()), None);
    }

    #[test]
    fn invite_only() {
        let p = policy(r#"{"mode":"invite_only"}"#);
        assert_eq!(p.check(None, true), Ok(()));
        assert_eq!(
            refused(&p, Some("CN"), false),
            ("invite_required", "New registrations currently need an invitation.".to_owned())
        );
    }

    #[test]
    fn restricted_modes_add_the_operator_message_after_the_rule() {
        let p = policy(r#"{"mode":"regions","allow":["CN"],"message":"Launch week."}"#);
        assert_eq!(
            refused(&p, Some("US"), false).1,
            "New registrations are limited to phone numbers from: CN. Launch week."
        );
        assert_eq!(
            refused(&p, None, false).1,
            "New registrations currently need a phone number from: CN. Launch week."
        );
        let p = policy(r#"{"mode":"invite_only","message":"Invites on Monday."}"#);
        assert_eq!(refused(&p, None, false).1, "New registrations currently need an invitation. Invites on Monday.");
        let blank = policy(r#"{"mode":"invite_only","message":" "}"#);
        assert_eq!(blank, RegistrationPolicy::InviteOnly { message: None }, "blank message means none");
        // `null` (as the CLI sends when no --message is given) is no message.
        assert_eq!(
            policy(r#"{"mode":"regions","allow":["CN"],"message":null}"#),
            policy(r#"{"mode":"regions","allow":["CN"]}"#)
        );
    }

    #[test]
    fn closed_uses_the_operator_message_or_a_clear_default() {
        let custom = policy(r#"{"mode":"closed","message":"Registrations reopen at 18:00 UTC."}"#);
        assert_eq!(
            refused(&custom, Some("CN"), true),
            ("registration_closed", "Registrations reopen at 18:00 UTC.".to_owned())
        );
        let default = policy(r#"{"mode":"closed"}"#);
        let (code, msg) = refused(&default, None, false);
        assert_eq!(code, "registration_closed");
        assert!(msg.contains("still sign in"), "{msg}");
        assert_eq!(policy(r#"{"mode":"closed","message":"  "}"#), default, "blank message means default");
    }

    #[test]
    fn region_type() {
        assert_eq!(Region::new("CN").map(|r| r.as_str().to_owned()), Ok("CN".to_owned()));
        for bad in ["", "C", "cn", "Cn", "CHN", "C1", "ÇN"] {
            assert!(Region::new(bad).is_err(), "{bad}");
        }
    }
}
