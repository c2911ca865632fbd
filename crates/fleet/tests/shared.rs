//! The fleet's calls against a real Redis: two `Fleet`s stand for two nodes.

use std::time::Duration;

use fleet::{Fleet, FleetConfig, LimitKey, SharedLimit, Switch};
use shield::Gcra;

fn node(r: &testkit::redis::TestRedis) -> Fleet {
    Fleet::new(&FleetConfig { url: r.url.clone(), prefix: r.prefix.clone(), timeout: Duration::from_millis(500) })
        .expect("valid config")
}

fn limits(per_minute: u32, subnet_per_minute: u32) -> Vec<SharedLimit> {
    let rate = |n| Gcra::per_period(n, Duration::from_secs(60), n).unwrap();
    vec![
        SharedLimit { key: LimitKey::new("s/198.51.100.0", "ip/198.51.100.7"), rate: rate(per_minute) },
        SharedLimit { key: LimitKey::new("s/198.51.100.0", "net"), rate: rate(subnet_per_minute) },
    ]
}

#[tokio::test]
async fn two_nodes_share_one_bucket_and_refuse_all_or_nothing() {
    let Some(r) = testkit::redis::shared_redis() else { return };
    let (a, b) = (node(&r), node(&r));
    let mut admitted = 0;
    for i in 0..20 {
        let n = if i % 2 == 0 { &a } else { &b };
        if n.check(&limits(10, 100), 1).await.expect("answers").decision.allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10, "one budget of 10 across both nodes");
    let refused = a.check(&limits(10, 100), 1).await.unwrap().decision;
    assert!(!refused.allowed && refused.retry_after.is_some(), "{refused:?}");
    assert_eq!(refused.limit, 10);

    // A subnet limit of 3 refuses the address limit too, and spends nothing from it.
    let tight = |ip: &str| {
        let rate = |n| Gcra::per_period(n, Duration::from_secs(60), n).unwrap();
        vec![
            SharedLimit { key: LimitKey::new("s/203.0.113.0", format!("ip/{ip}")), rate: rate(5) },
            SharedLimit { key: LimitKey::new("s/203.0.113.0", "net"), rate: rate(3) },
        ]
    };
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert!(b.check(&tight(ip), 1).await.unwrap().decision.allowed);
    }
    let c = a.check(&tight("203.0.113.1"), 1).await.unwrap();
    assert_eq!(c.refused_by, Some(1), "the subnet refused");
    let d = c.decision;
    assert!(!d.allowed);
    assert_eq!(d.limit, 3, "the subnet's headers");
}

#[tokio::test]
async fn a_claim_counts_once_across_nodes() {
    let Some(r) = testkit::redis::shared_redis() else { return };
    let (a, b) = (node(&r), node(&r));
    assert!(a.claim_once("pow", b"solution-1", Duration::from_secs(60)).await.unwrap());
    assert!(!b.claim_once("pow", b"solution-1", Duration::from_secs(60)).await.unwrap());
    assert!(b.claim_once("pow", b"solution-2", Duration::from_secs(60)).await.unwrap());
}

#[tokio::test]
async fn switches_are_versioned_and_listed() {
    let Some(r) = testkit::redis::shared_redis() else { return };
    let (a, b) = (node(&r), node(&r));
    let before = b.versions().await.unwrap();
    a.put_list_rule("block 203.0.113.0/24", Some("0 test")).await.unwrap();
    a.set_attack_override("on").await.unwrap();
    let after = b.versions().await.unwrap();
    assert_eq!(after.changed_since(&before).collect::<Vec<_>>(), [Switch::Lists, Switch::Attack]);
    assert_eq!(b.list_rules().await.unwrap(), [("block 203.0.113.0/24".to_owned(), "0 test".to_owned())]);
    assert_eq!(b.attack_override().await.unwrap().as_deref(), Some("on"));
    a.put_list_rule("block 203.0.113.0/24", None).await.unwrap();
    assert!(b.list_rules().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_different_shield_key_is_refused() {
    let Some(r) = testkit::redis::shared_redis() else { return };
    let (a, b) = (node(&r), node(&r));
    a.check_shield_key("aaaa").await.unwrap();
    a.check_shield_key("aaaa").await.unwrap();
    assert!(matches!(b.check_shield_key("bbbb").await, Err(fleet::FleetError::ShieldKeyMismatch)));
}

#[tokio::test]
async fn a_dead_server_marks_the_fleet_down_fast_and_the_probe_brings_it_back() {
    let Some(mut r) = testkit::redis::PrivateRedis::start() else { return };
    let f = Fleet::new(&FleetConfig { url: r.url.clone(), prefix: "t".into(), timeout: Duration::from_millis(100) })
        .unwrap();
    assert!(f.check(&limits(10, 10), 1).await.is_ok());
    r.stop();
    let started = std::time::Instant::now();
    assert!(f.check(&limits(10, 10), 1).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(1), "bounded: {:?}", started.elapsed());
    assert!(!f.is_up());
    r.restart();
    let probe = async { f.run_probe(Duration::from_millis(50)).await };
    let back = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f.is_up() {
            assert!(std::time::Instant::now() < deadline, "not back within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! { () = probe => unreachable!(), () = back => {} }
    assert!(f.check(&limits(10, 10), 1).await.is_ok());
}

#[tokio::test]
async fn parallel_password_guesses_on_two_nodes_get_no_more_tries_than_on_one() {
    use accounts::throttle::{Attempt, LoginKeys, LoginRules, Outcome};
    let Some(r) = testkit::redis::shared_redis() else { return };
    let (a, b) = (node(&r), node(&r));
    let limits = LoginRules {
        free_per_account: 5,
        free_per_address: 20,
        base_delay: Duration::from_secs(30),
        max_delay: Duration::from_secs(900),
        forget_after: Duration::from_secs(3600),
        remember_network: Duration::from_secs(3600),
    };
    let key = |n: u8| LoginKeys {
        account: b"victim",
        network: Some("198.18.0.0/24".parse().unwrap()),
        address: Some(std::net::IpAddr::from([198, 18, 0, 1 + n])),
    };
    // Forty guesses at once, half on each node, none answered before the next is asked.
    let guesses = (0..40u8).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        node.login_attempt(key(i % 2), &limits)
    });
    let verdicts = futures_util::future::join_all(guesses).await;
    let went = verdicts.iter().filter(|v| matches!(v, Ok(Attempt::Go { .. }))).count();
    assert_eq!(went, 6, "the five free guesses and the one that starts the wait: {verdicts:?}");
    let Ok(Attempt::Wait(wait)) = b.login_attempt(key(1), &limits).await else { panic!("held off") };
    assert!(wait > Duration::from_secs(25), "{wait:?}");

    // The owner signs in from another network (a refund first: a second factor was due).
    let owner = LoginKeys {
        account: b"owner",
        network: Some("192.0.2.0/24".parse().unwrap()),
        address: Some(std::net::IpAddr::from([192, 0, 2, 9])),
    };
    assert_eq!(a.login_attempt(owner, &limits).await.unwrap(), Attempt::Go { known: false });
    a.login_settle(owner, &limits, Outcome::Refund).await.unwrap();
    assert_eq!(b.login_attempt(owner, &limits).await.unwrap(), Attempt::Go { known: false });
    b.login_settle(owner, &limits, Outcome::Success { known: false }).await.unwrap();
    assert_eq!(a.login_attempt(owner, &limits).await.unwrap(), Attempt::Go { known: true }, "known on every node");
}
