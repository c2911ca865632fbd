//! The shield's signed tokens as clients send them back: clearances
//! (`PowIssuer::check_clearance`), waiting-room tickets (`WaitingRoom::open_ticket`) and
//! admission passes (`WaitingRoom::check_pass`).
//!
//! Input: a kind byte, eight bytes of payload (ticket number, budget, time), then text.
//! Each run issues a genuine token from the payload and presents the text with `TOKEN`
//! replaced by it: a token opens only exactly as it was issued (so it re-encodes to
//! itself), and what it carries comes back unchanged.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shield::{Cidr, ClearanceError, ClientBinding, PowIssuer, WaitingRoom, WaitingRoomConfig, WaitingRoomError};

const T0: Duration = Duration::from_secs(1_700_000_000);
const KEY: [u8; 32] = [9; 32];

fuzz_target!(|data: &[u8]| {
    let [kind, payload @ ..] = data else { return };
    let Some((fields, text)) = payload.split_first_chunk::<8>() else { return };
    let field = u64::from_be_bytes(*fields);
    let subnet = Cidr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24).expect("a /24");
    let binding = ClientBinding::new(subnet, "fuzz");
    let other = ClientBinding::new(subnet, "another agent");
    let text = String::from_utf8_lossy(text);
    // Up to a minute later: before and after a short expiry.
    let now = T0 + Duration::from_millis(field % 60_000);

    match kind % 3 {
        0 => {
            let issuer = PowIssuer::new(KEY);
            let ttl = Duration::from_secs(field >> 48);
            let budget = (field >> 16) as u32;
            let issued = issuer.issue_clearance(&binding, ttl, budget, T0);
            let token = text.replacen("TOKEN", &issued, 1);
            match issuer.check_clearance(&token, &binding, now) {
                Ok(c) => {
                    assert_eq!(token, issued, "only the issued spelling opens");
                    assert_eq!(c.budget, budget.max(1));
                    assert_eq!(c.issued_at, T0);
                    assert!(c.expires_at > now && c.expires_at > c.issued_at);
                    assert!(c.expires_at - c.issued_at <= shield::clearance::MAX_CLEARANCE_TTL);
                    assert_eq!(issuer.check_clearance(&token, &other, now), Err(ClearanceError::WrongClient));
                }
                Err(ClearanceError::Expired) => assert_eq!(token, issued),
                Err(e) => assert!(token != issued, "the issued clearance was refused: {e:?}"),
            }
        }
        1 => {
            let room = WaitingRoom::with_epoch(small(), KEY, 5);
            let issued = room.seal_ticket(field, &binding, T0);
            let ticket = text.replacen("TOKEN", &issued, 1);
            match room.open_ticket(&ticket, &binding) {
                Ok(seq) => {
                    assert_eq!(ticket, issued, "only the issued spelling opens");
                    assert_eq!(seq, Some(field));
                    assert_eq!(room.open_ticket(&ticket, &other), Err(WaitingRoomError::WrongClient));
                    let later = WaitingRoom::with_epoch(small(), KEY, 6);
                    assert_eq!(later.open_ticket(&ticket, &binding), Ok(None), "another epoch reads as expired");
                }
                Err(e) => assert!(ticket != issued, "the issued ticket was refused: {e:?}"),
            }
        }
        _ => {
            let config = WaitingRoomConfig { pass_ttl_ms: field >> 48, ..small() };
            let room = WaitingRoom::with_epoch(config, KEY, 5);
            let issued = room.pass_for(field, &binding, T0);
            let pass = text.replacen("TOKEN", &issued, 1);
            match room.check_pass(&pass, &binding, now) {
                Ok(p) => {
                    assert_eq!(pass, issued, "only the issued spelling opens");
                    assert_eq!(p.expires_at, T0 + Duration::from_millis(field >> 48));
                    assert!(p.expires_at > now);
                    assert_eq!(room.check_pass(&pass, &other, now), Err(WaitingRoomError::WrongClient));
                }
                Err(WaitingRoomError::PassExpired) => assert_eq!(pass, issued),
                Err(e) => assert!(pass != issued, "the issued pass was refused: {e:?}"),
            }
        }
    }
});

/// A room with few slots: the tokens do not depend on its size, and a big one costs an
/// allocation per run.
fn small() -> WaitingRoomConfig {
    WaitingRoomConfig { capacity: 4, ..WaitingRoomConfig::default() }
}
