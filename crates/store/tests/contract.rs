//! The contract every `Store` back-end keeps. Each case is written once, as an
//! `async fn(Store, url)` receiving a freshly opened and migrated store on an
//! empty database (and its URL, for the cases that reopen it), and `contract!`
//! runs it against SQLite (`sqlite::<case>`) and PostgreSQL (`postgres::<case>`).

use store::{
    AuditEntry, CodePurpose, Identifier, IncidentChange, ListRuleRow, NewApiKey, NewCode, NewIncident, NewMaintenance,
    NewRegistration, NewUser, StatusChangeRow, Store, StoreError, UserStatus,
};

/// Generates one test per case and back-end. Tests run on a multi-threaded
/// runtime so the concurrency case really overlaps its writes.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let db = testkit::postgres::fresh_sqlite();
                    let store = super::open_migrated(&db.url).await;
                    assert_eq!(store.backend(), store::Backend::Sqlite);
                    super::$case(store, &db.url).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(db) = testkit::postgres::fresh_postgres().await else { return };
                    let store = super::open_migrated(&db.url).await;
                    assert_eq!(store.backend(), store::Backend::Postgres);
                    super::$case(store, &db.url).await;
                }
            )+
        }
    };
}

contract!(
    migrate_is_idempotent,
    migrate_is_idempotent_on_a_reopened_database,
    ping_answers,
    meta_roundtrips,
    set_meta_overwrites,
    missing_key_is_none,
    unusual_keys_and_values_are_stored_exactly,
    concurrent_writes_to_distinct_keys_all_land,
    data_survives_close_and_reopen,
    same_phone_held_concurrently_exactly_one_wins,
    users_are_found_by_blind_index_and_verified,
    a_registration_is_its_account_code_and_audit_entry_together,
    unverified_claims_do_not_hold_and_the_first_to_verify_wins,
    claims_racing_to_verify_leave_exactly_one_holder,
    other_sessions_end_and_the_current_one_stays,
    totp_steps_only_move_forward,
    recovery_codes_are_single_use,
    sessions_expire_and_can_be_revoked,
    api_keys_are_found_by_prefix_and_revoked_once,
    verification_codes_count_attempts_and_expire,
    invites_are_single_use_and_expire,
    audit_entries_are_appended_and_listed_newest_first,
    an_intact_audit_chain_verifies_and_its_checkpoints_are_signed,
    an_edited_audit_entry_is_found,
    a_removed_audit_entry_is_found,
    an_inserted_audit_entry_is_found,
    reordered_audit_entries_are_found,
    a_rewritten_chain_is_caught_by_its_signed_checkpoint,
    concurrent_audit_appends_keep_one_chain,
    status_changes_carry_the_last_state_into_the_window,
    status_change_reads_keep_the_newest_when_bounded,
    incidents_keep_their_updates_in_order_and_close_on_resolve,
    one_unresolved_automatic_incident_per_cause,
    incident_reads_are_bounded_and_keep_unresolved_ones,
    updating_a_missing_incident_changes_nothing,
    component_overrides_are_set_replaced_and_cleared,
    list_rules_are_kept_replaced_removed_and_expire,
    a_lease_has_one_holder_until_it_lapses,
    maintenances_are_listed_by_window,
    incidents_and_history_survive_close_and_reopen,
    use_is_counted_once_a_day_and_pins_are_set_and_lifted,
    cohorts_are_flagged_once_listed_and_cleared,
    operators_enroll_once_with_their_setup_code,
    operator_tokens_expire_and_end_with_the_operator,
);

async fn open_migrated(url: &str) -> Store {
    let store = Store::open(url).await.expect("open the store");
    store.migrate().await.expect("first migration");
    store
}

async fn migrate_is_idempotent(store: Store, _url: &str) {
    store.set_meta("k", "v").await.unwrap();
    store.migrate().await.expect("second migration");
    store.migrate().await.expect("third migration");
    assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("v"), "migrating again keeps data");
}

async fn migrate_is_idempotent_on_a_reopened_database(store: Store, url: &str) {
    store.set_meta("k", "v").await.unwrap();
    store.close().await;
    let reopened = Store::open(url).await.expect("reopen");
    reopened.migrate().await.expect("migration after reopen");
    reopened.migrate().await.expect("second migration after reopen");
    assert_eq!(reopened.meta("k").await.unwrap().as_deref(), Some("v"));
}

async fn ping_answers(store: Store, _url: &str) {
    store.ping().await.expect("ping");
    store.ping().await.expect("second ping");
}

async fn meta_roundtrips(store: Store, _url: &str) {
    store.set_meta("schema_owner", "palisade").await.unwrap();
    store.set_meta("instance_id", "7f3a").await.unwrap();
    assert_eq!(store.meta("schema_owner").await.unwrap().as_deref(), Some("palisade"));
    assert_eq!(store.meta("instance_id").await.unwrap().as_deref(), Some("7f3a"));
}

async fn set_meta_overwrites(store: Store, _url: &str) {
    store.set_meta("k", "first").await.unwrap();
    store.set_meta("other", "untouched").await.unwrap();
    store.set_meta("k", "second").await.unwrap();
    assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("second"));
    assert_eq!(store.meta("other").await.unwrap().as_deref(), Some("untouched"));
}

async fn missing_key_is_none(store: Store, _url: &str) {
    assert_eq!(store.meta("never-set").await.unwrap(), None);
    store.set_meta("set", "v").await.unwrap();
    assert_eq!(store.meta("never-set").await.unwrap(), None);
    assert_eq!(store.meta("").await.unwrap(), None);
    assert_eq!(store.meta("SET").await.unwrap(), None, "keys are case-sensitive");
}

async fn unusual_keys_and_values_are_stored_exactly(store: Store, _url: &str) {
    // NUL is left out on purpose: PostgreSQL TEXT cannot hold it, SQLite can.
    let pairs = [
        ("ключ 🔑", "значение ✓"),
        ("it's", "a 'quoted' value"),
        ("\"double\"", "\"also\""),
        ("back\\slash", "C:\\path\\"),
        ("'; DROP TABLE palisade_meta; --", "still here"),
        ("trailing ", "kept "),
        ("trailing", "distinct from the key with a space"),
        ("", "empty key"),
        ("multi\nline", "line one\nline two\r\n"),
        ("e\u{301}", "combining accent, not normalised"),
        ("\u{e9}", "precomposed"),
    ];
    for (key, value) in pairs {
        store.set_meta(key, value).await.unwrap();
    }
    for (key, value) in pairs {
        assert_eq!(store.meta(key).await.unwrap().as_deref(), Some(value), "key {key:?}");
    }
}

async fn concurrent_writes_to_distinct_keys_all_land(store: Store, _url: &str) {
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        writers.spawn(async move { store.set_meta(&format!("key-{i}"), &format!("value-{i}")).await });
    }
    while let Some(joined) = writers.join_next().await {
        joined.expect("writer task").expect("set_meta");
    }
    for i in 0..20 {
        assert_eq!(store.meta(&format!("key-{i}")).await.unwrap(), Some(format!("value-{i}")));
    }
}

async fn data_survives_close_and_reopen(store: Store, url: &str) {
    store.set_meta("durable", "yes").await.unwrap();
    store.close().await;
    let reopened = Store::open(url).await.expect("reopen");
    assert_eq!(reopened.meta("durable").await.unwrap().as_deref(), Some("yes"));
}

/// Not per back-end: the URL is refused before any back-end is chosen.
#[tokio::test]
async fn unsupported_url_is_refused() {
    for url in ["mysql://x", "mysql://app:s3cret@db/x", "", "sqlite"] {
        match Store::open(url).await {
            Err(StoreError::UnsupportedUrl(shown)) => {
                assert!(!shown.contains("s3cret"), "the error must not print the password: {shown}");
            }
            other => panic!("{url:?}: expected UnsupportedUrl, got {other:?}"),
        }
    }
}

fn new_user(phone_idx: &[u8]) -> NewUser {
    NewUser {
        phone_enc: Some(vec![1, 2, 3]),
        phone_idx: Some(phone_idx.to_vec()),
        phone_region: Some("CN".into()),
        email_enc: None,
        email_idx: None,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$x$y".into(),
        status: UserStatus::Unverified,
    }
}

fn verified_user(phone_idx: &[u8]) -> NewUser {
    NewUser { status: UserStatus::Active, ..new_user(phone_idx) }
}

async fn same_phone_held_concurrently_exactly_one_wins(store: Store, _url: &str) {
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_user(&verified_user(b"same-phone"), 1).await })
    });
    let mut won = 0;
    let mut conflicts = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((won, conflicts), (1, 7));
}

async fn users_are_found_by_blind_index_and_verified(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"idx-1"), 100).await.unwrap();
    let mut email_user = new_user(b"idx-2");
    email_user.email_idx = Some(b"mail-idx".to_vec());
    email_user.email_enc = Some(vec![9]);
    let other = store.create_user(&email_user, 100).await.unwrap();
    assert_ne!(id, other);
    // Unverified: found as a claim, not as a holder.
    assert!(store.holder_of(Identifier::Phone(b"idx-1")).await.unwrap().is_none());
    let found = store.user_by_identifier(Identifier::Phone(b"idx-1"), 0).await.unwrap().unwrap();
    assert_eq!((found.id, found.status(), found.verified_at), (id, UserStatus::Unverified, None));
    assert_eq!(found.phone_region.as_deref(), Some("CN"));
    assert!(store.user_by_identifier(Identifier::Phone(b"idx-1"), 100).await.unwrap().is_none(), "a lapsed claim");
    let by_mail = store.user_by_identifier(Identifier::Email(b"mail-idx"), 0).await.unwrap().unwrap();
    assert_eq!(by_mail.id, other);
    assert!(store.user_by_identifier(Identifier::Phone(b"nobody"), 0).await.unwrap().is_none());
    store.verify_user(id, 200).await.unwrap();
    let holder = store.holder_of(Identifier::Phone(b"idx-1")).await.unwrap().unwrap();
    assert_eq!((holder.id, holder.status(), holder.verified_at), (id, UserStatus::Active, Some(200)));
    assert!(matches!(store.verify_user(id, 300).await, Err(StoreError::NotFound(_))), "verified once");
    assert!(store.set_user_status(id, UserStatus::Suspended, 400).await.unwrap());
    let user = store.user(id).await.unwrap().unwrap();
    assert_eq!((user.status(), user.verified_at), (UserStatus::Suspended, Some(200)), "verification time kept");
    assert!(!store.set_user_status(9999, UserStatus::Active, 1).await.unwrap());
    store.set_mfa_required(id, true).await.unwrap();
    assert!(store.user(id).await.unwrap().unwrap().mfa_required);
    let batch = store.users_after(0, 10).await.unwrap();
    assert_eq!(batch.iter().map(|u| u.id).collect::<Vec<_>>(), vec![id, other]);
}

async fn totp_steps_only_move_forward(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"totp"), 1).await.unwrap();
    store.set_totp(id, Some(&[7, 7])).await.unwrap();
    assert!(store.advance_totp_step(id, 10).await.unwrap());
    assert!(!store.advance_totp_step(id, 10).await.unwrap(), "replayed step");
    assert!(!store.advance_totp_step(id, 9).await.unwrap());
    assert!(store.advance_totp_step(id, 11).await.unwrap());
    store.set_totp(id, None).await.unwrap();
    let user = store.user(id).await.unwrap().unwrap();
    assert_eq!((user.totp_secret_enc, user.totp_last_step), (None, None));
}

async fn recovery_codes_are_single_use(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"rc"), 1).await.unwrap();
    let codes: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 32]).collect();
    store.replace_recovery_codes(id, &codes).await.unwrap();
    assert_eq!(store.unused_recovery_codes(id).await.unwrap(), 10);
    assert!(store.use_recovery_code(id, &codes[3], 5).await.unwrap());
    assert!(!store.use_recovery_code(id, &codes[3], 6).await.unwrap(), "second use");
    assert!(!store.use_recovery_code(id, &[99; 32], 6).await.unwrap());
    assert_eq!(store.unused_recovery_codes(id).await.unwrap(), 9);
    store.replace_recovery_codes(id, &codes[..2]).await.unwrap();
    assert_eq!(store.unused_recovery_codes(id).await.unwrap(), 2);
}

async fn sessions_expire_and_can_be_revoked(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"s"), 1).await.unwrap();
    store.create_session(b"token-a", id, 100, 1_000).await.unwrap();
    store.create_session(b"token-b", id, 200, 1_000).await.unwrap();
    assert_eq!(store.session(b"token-a", 500).await.unwrap().unwrap().user_id, id);
    assert!(store.session(b"token-a", 1_000).await.unwrap().is_none(), "expired");
    assert_eq!(store.sessions_of(id, 500).await.unwrap().len(), 2);
    assert!(store.delete_session(id, b"token-a").await.unwrap());
    assert!(!store.delete_session(id, b"token-a").await.unwrap());
    assert!(!store.delete_session(id + 1, b"token-b").await.unwrap(), "another user's session");
    assert_eq!(store.delete_sessions_of(id).await.unwrap(), 1);
    assert!(store.session(b"token-b", 500).await.unwrap().is_none());
}

async fn api_keys_are_found_by_prefix_and_revoked_once(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"k"), 1).await.unwrap();
    let key = NewApiKey {
        user_id: id,
        prefix: "pal_abcd1234".into(),
        secret_hash: vec![5; 32],
        name: "laptop".into(),
        scopes: "inference".into(),
        rpm_limit: Some(60),
    };
    let key_id = store.create_api_key(&key, 10).await.unwrap();
    assert!(matches!(store.create_api_key(&key, 11).await, Err(StoreError::Conflict(_))));
    let row = store.api_key_by_prefix("pal_abcd1234").await.unwrap().unwrap();
    assert_eq!((row.id, row.user_id, row.rpm_limit, row.revoked_at), (key_id, id, Some(60), None));
    store.touch_api_key(key_id, 20).await.unwrap();
    assert_eq!(store.api_keys_of(id).await.unwrap()[0].last_used_at, Some(20));
    assert!(!store.revoke_api_key("pal_abcd1234", Some(id + 1), 30).await.unwrap(), "not the owner");
    assert!(store.revoke_api_key("pal_abcd1234", Some(id), 30).await.unwrap());
    assert!(!store.revoke_api_key("pal_abcd1234", None, 31).await.unwrap(), "already revoked");
    assert_eq!(store.all_api_keys().await.unwrap()[0].revoked_at, Some(30));
}

fn code(hash: &[u8], expires_at: i64) -> NewCode<'_> {
    NewCode { purpose: CodePurpose::Verify, hash, expires_at, window_ms: 1_000 }
}

async fn verification_codes_count_attempts_and_expire(store: Store, _url: &str) {
    use CodePurpose::{Reset, Verify};
    let id = store.create_user(&new_user(b"v"), 1).await.unwrap();
    assert!(store.attempt_verification_code(id, Verify, 10).await.unwrap().is_none());
    store.put_verification_code(id, code(b"h1", 500), 10).await.unwrap();
    assert_eq!(store.attempt_verification_code(id, Verify, 10).await.unwrap(), Some((b"h1".to_vec(), 1)));
    assert_eq!(store.attempt_verification_code(id, Verify, 11).await.unwrap(), Some((b"h1".to_vec(), 2)));
    assert!(store.attempt_verification_code(id, Reset, 11).await.unwrap().is_none(), "another purpose");
    // A resend within the window keeps the guesses spent; in a new window they start over.
    store.put_verification_code(id, code(b"h2", 600), 200).await.unwrap();
    assert_eq!(store.attempt_verification_code(id, Verify, 201).await.unwrap(), Some((b"h2".to_vec(), 3)));
    store.put_verification_code(id, code(b"h3", 2_000), 1_100).await.unwrap();
    assert_eq!(store.attempt_verification_code(id, Verify, 1_101).await.unwrap(), Some((b"h3".to_vec(), 1)));
    assert!(store.attempt_verification_code(id, Verify, 2_000).await.unwrap().is_none(), "expired");
    store.delete_verification_code(id).await.unwrap();
    assert!(store.attempt_verification_code(id, Verify, 1_200).await.unwrap().is_none());
}

fn signup_audit() -> AuditEntry {
    AuditEntry {
        actor: String::new(),
        action: "auth.register".into(),
        outcome: "ok".into(),
        ip: Some("198.51.100.7".into()),
        reason: None,
        detail: None,
    }
}

async fn register(store: &Store, phone_idx: &[u8], now: i64) -> i64 {
    let hash = |id: i64| id.to_be_bytes().to_vec();
    let audit = signup_audit();
    let user = new_user(phone_idx);
    let r = NewRegistration { user: &user, code_hash: &hash, code_expires_at: now + 1_000, audit: &audit };
    store.register(&r, now).await.unwrap()
}

async fn a_registration_is_its_account_code_and_audit_entry_together(store: Store, _url: &str) {
    let id = register(&store, b"together", 10).await;
    assert_eq!(store.user(id).await.unwrap().unwrap().status(), UserStatus::Unverified);
    let (hash, _) = store.attempt_verification_code(id, CodePurpose::Verify, 11).await.unwrap().unwrap();
    assert_eq!(hash, id.to_be_bytes().to_vec(), "the code's hash was made for the new id");
    let audit = store.recent_audit(10, Some("auth.register")).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].ip.as_deref()),
        (format!("user:{id}").as_str(), Some("198.51.100.7"))
    );
}

async fn unverified_claims_do_not_hold_and_the_first_to_verify_wins(store: Store, _url: &str) {
    // A squatter typed the number first; two more claims follow.
    let squatter = register(&store, b"contested", 10).await;
    let owner = register(&store, b"contested", 20).await;
    let late = register(&store, b"contested", 30).await;
    let newest = store.user_by_identifier(Identifier::Phone(b"contested"), 0).await.unwrap().unwrap();
    assert_eq!(newest.id, late, "a login finds the newest claim");
    store.verify_user(owner, 40).await.unwrap();
    assert_eq!(store.holder_of(Identifier::Phone(b"contested")).await.unwrap().unwrap().id, owner);
    for dropped in [squatter, late] {
        assert!(store.user(dropped).await.unwrap().is_none(), "the other claims are gone");
    }
    // A claim made after the number is held can never take it.
    let after = register(&store, b"contested", 50).await;
    assert!(matches!(store.verify_user(after, 60).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.holder_of(Identifier::Phone(b"contested")).await.unwrap().unwrap().id, owner);
}

async fn claims_racing_to_verify_leave_exactly_one_holder(store: Store, _url: &str) {
    let mut claims = Vec::new();
    for n in 0..6 {
        claims.push(register(&store, b"race", n).await);
    }
    let attempts: Vec<_> = claims
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), *id);
            tokio::spawn(async move { store.verify_user(id, 100).await })
        })
        .collect();
    let mut won = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
            Err(e) if e.to_string().contains("lock") || e.to_string().contains("serializ") => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1);
    let holder = store.holder_of(Identifier::Phone(b"race")).await.unwrap().unwrap();
    assert!(claims.contains(&holder.id));
}

async fn other_sessions_end_and_the_current_one_stays(store: Store, _url: &str) {
    let id = store.create_user(&verified_user(b"sessions"), 1).await.unwrap();
    for token in [b"a", b"b", b"c"] {
        store.create_session(token, id, 1, 1_000).await.unwrap();
    }
    assert_eq!(store.delete_sessions_except(id, Some(b"b")).await.unwrap(), 2);
    let left: Vec<Vec<u8>> = store.sessions_of(id, 2).await.unwrap().into_iter().map(|s| s.token_hash).collect();
    assert_eq!(left, vec![b"b".to_vec()]);
    assert_eq!(store.delete_sessions_except(id, None).await.unwrap(), 1);
}

async fn invites_are_single_use_and_expire(store: Store, _url: &str) {
    let a = store.create_user(&new_user(b"i1"), 1).await.unwrap();
    store.create_invite(b"inv", 1, 100).await.unwrap();
    assert!(matches!(store.create_invite(b"inv", 1, 100).await, Err(StoreError::Conflict(_))));
    assert!(store.invite_is_live(b"inv", 50).await.unwrap());
    assert!(!store.invite_is_live(b"inv", 100).await.unwrap());
    assert!(store.use_invite(b"inv", 50).await.unwrap());
    assert!(!store.use_invite(b"inv", 51).await.unwrap(), "second use");
    store.release_invite(b"inv").await.unwrap();
    assert!(store.use_invite(b"inv", 52).await.unwrap(), "released by a failed sign-up");
    store.attach_invite(b"inv", a).await.unwrap();
    store.release_invite(b"inv").await.unwrap();
    assert!(!store.use_invite(b"inv", 53).await.unwrap(), "attached invites stay spent");
    store.create_invite(b"old", 1, 10).await.unwrap();
    assert!(!store.use_invite(b"old", 10).await.unwrap(), "expired");
}

async fn audit_entries_are_appended_and_listed_newest_first(store: Store, _url: &str) {
    for (i, action) in ["auth.login", "auth.register", "key.create"].iter().enumerate() {
        let entry = AuditEntry {
            actor: format!("user:{i}"),
            action: action.to_string(),
            outcome: "ok".into(),
            ip: Some("127.0.0.1".into()),
            reason: None,
            detail: Some(serde_json::json!({"n": i})),
        };
        store.append_audit(&entry, 1_000 + i as i64).await.unwrap();
    }
    let all = store.recent_audit(10, None).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.action.as_str()).collect::<Vec<_>>(),
        ["key.create", "auth.register", "auth.login"]
    );
    assert_eq!(all[0].detail.as_deref(), Some("{\"n\":2}"));
    let auth = store.recent_audit(10, Some("auth.")).await.unwrap();
    assert_eq!(auth.len(), 2);
    assert_eq!(store.recent_audit(1, None).await.unwrap().len(), 1);
}

fn change(component: &str, status: &str, at: i64) -> StatusChangeRow {
    StatusChangeRow { component_id: component.into(), status: status.into(), at }
}

async fn status_changes_carry_the_last_state_into_the_window(store: Store, _url: &str) {
    for (component, status, at) in [
        ("api", "operational", 100),
        ("api", "major_outage", 200),
        ("web", "operational", 150),
        ("api", "operational", 1_000),
        ("web", "degraded_performance", 1_100),
        ("login", "operational", 1_200),
    ] {
        store.record_status_change(component, status, at).await.unwrap();
    }
    let changes = store.status_changes_since(500, 100).await.unwrap();
    assert_eq!(
        changes,
        [
            change("web", "operational", 150),
            change("api", "major_outage", 200),
            change("api", "operational", 1_000),
            change("web", "degraded_performance", 1_100),
            change("login", "operational", 1_200),
        ],
        "the last change before the window, per component, then the window oldest first"
    );
    let latest = store.last_status_changes(i64::MAX).await.unwrap();
    assert_eq!(
        latest,
        [
            change("api", "operational", 1_000),
            change("web", "degraded_performance", 1_100),
            change("login", "operational", 1_200)
        ]
    );
    // Of two changes at the same instant, the one recorded last is the state.
    store.record_status_change("login", "major_outage", 1_200).await.unwrap();
    assert_eq!(store.last_status_changes(i64::MAX).await.unwrap()[2], change("login", "major_outage", 1_200));
    assert!(store.status_changes_since(5_000, 100).await.unwrap().iter().all(|c| c.at < 5_000));
}

async fn status_change_reads_keep_the_newest_when_bounded(store: Store, _url: &str) {
    for at in 0..30 {
        let status = if at % 2 == 0 { "operational" } else { "major_outage" };
        store.record_status_change("api", status, 1_000 + at).await.unwrap();
    }
    let changes = store.status_changes_since(1_000, 10).await.unwrap();
    assert_eq!(changes.len(), 10);
    assert_eq!(changes.iter().map(|c| c.at).collect::<Vec<_>>(), (1_020..1_030).collect::<Vec<_>>());
}

fn new_incident(name: &str, auto_key: Option<&str>) -> NewIncident {
    NewIncident {
        name: name.into(),
        status: "investigating".into(),
        impact: "major".into(),
        body: format!("{name}: looking into it"),
        component_ids: vec!["api".into(), "model-a".into()],
        auto_key: auto_key.map(str::to_owned),
    }
}

fn update(status: &str, body: &str) -> IncidentChange {
    IncidentChange { status: status.into(), body: body.into(), ..IncidentChange::default() }
}

async fn incidents_keep_their_updates_in_order_and_close_on_resolve(store: Store, _url: &str) {
    let id = store.open_incident(&new_incident("Slow API", None), 1_000).await.unwrap();
    let record = store.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (record.incident.status.as_str(), record.incident.impact.as_str(), record.incident.created_at),
        ("investigating", "major", 1_000)
    );
    assert_eq!(record.incident.component_ids, ["api", "model-a"]);
    assert_eq!((record.incident.auto_key, record.incident.resolved_at), (None, None));
    assert_eq!(record.updates.len(), 1);

    let edit = IncidentChange {
        status: "identified".into(),
        body: "A model server is overloaded.\nAdding capacity.".into(),
        name: Some("Slow API replies".into()),
        impact: Some("minor".into()),
        component_ids: Some(vec!["api".into()]),
    };
    assert!(store.update_incident(id, &edit, 2_000).await.unwrap());
    assert!(store.update_incident(id, &update("monitoring", "Capacity added."), 3_000).await.unwrap());
    assert!(store.update_incident(id, &update("monitoring", "Still watching."), 3_500).await.unwrap());
    assert!(store.update_incident(id, &update("resolved", "Back to normal."), 4_000).await.unwrap());
    assert!(store.update_incident(id, &update("postmortem", "What happened."), 5_000).await.unwrap());

    let record = store.incident(id).await.unwrap().unwrap();
    let i = &record.incident;
    assert_eq!((i.name.as_str(), i.impact.as_str(), i.status.as_str()), ("Slow API replies", "minor", "postmortem"));
    assert_eq!(i.component_ids, ["api"]);
    assert_eq!((i.updated_at, i.monitoring_at, i.resolved_at), (5_000, Some(3_000), Some(4_000)));
    assert_eq!(
        record.updates.iter().map(|u| (u.status.as_str(), u.at)).collect::<Vec<_>>(),
        [
            ("investigating", 1_000),
            ("identified", 2_000),
            ("monitoring", 3_000),
            ("monitoring", 3_500),
            ("resolved", 4_000),
            ("postmortem", 5_000)
        ]
    );
    assert_eq!(record.updates[1].body, "A model server is overloaded.\nAdding capacity.");

    // Reopening clears the resolution time.
    assert!(store.update_incident(id, &update("investigating", "It is back."), 6_000).await.unwrap());
    assert_eq!(store.incident(id).await.unwrap().unwrap().incident.resolved_at, None);
}

async fn one_unresolved_automatic_incident_per_cause(store: Store, _url: &str) {
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.open_incident(&new_incident("API down", Some("component:api")), i).await })
        })
        .collect();
    let mut won = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(id) => won.push(id),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one node opens the incident");
    let open = store.open_incident_for("component:api").await.unwrap().unwrap();
    assert_eq!((open.id, open.auto_key.as_deref()), (won[0], Some("component:api")));
    assert!(store.open_incident_for("component:web").await.unwrap().is_none());
    // Operator incidents (no key) never conflict.
    store.open_incident(&new_incident("Manual one", None), 10).await.unwrap();
    store.open_incident(&new_incident("Manual two", None), 11).await.unwrap();

    store.update_incident(won[0], &update("resolved", "Recovered."), 20).await.unwrap();
    assert!(store.open_incident_for("component:api").await.unwrap().is_none());
    let again = store.open_incident(&new_incident("API down again", Some("component:api")), 30).await.unwrap();
    assert_ne!(again, won[0], "a resolved cause may open a new incident");
    // Reopening the old one while the new one is open would make two.
    assert!(matches!(
        store.update_incident(won[0], &update("investigating", "Reopen"), 40).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.incident(won[0]).await.unwrap().unwrap().updates.len(), 2, "refused update left no trace");
}

async fn incident_reads_are_bounded_and_keep_unresolved_ones(store: Store, _url: &str) {
    let old_open = store.open_incident(&new_incident("Old but open", None), 10).await.unwrap();
    let old_closed = store.open_incident(&new_incident("Old and closed", None), 20).await.unwrap();
    store.update_incident(old_closed, &update("resolved", "Done."), 30).await.unwrap();
    let mut recent = Vec::new();
    for i in 0..5 {
        let id = store.open_incident(&new_incident(&format!("Recent {i}"), None), 1_000 + i).await.unwrap();
        for n in 0..4 {
            store.update_incident(id, &update("identified", &format!("note {n}")), 1_100 + n).await.unwrap();
        }
        store.update_incident(id, &update("resolved", "Done."), 1_200).await.unwrap();
        recent.push(id);
    }

    let all = store.incidents_since(500, 100, 100).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|r| r.incident.id).collect();
    let mut expected = vec![old_open];
    expected.extend(recent.iter().rev());
    assert_eq!(ids, expected, "unresolved first, then newest first; old resolved ones left out");
    assert_eq!(all[1].updates.len(), 6);

    let bounded = store.incidents_since(500, 3, 2).await.unwrap();
    assert_eq!(bounded.iter().map(|r| r.incident.id).collect::<Vec<_>>(), expected[..3]);
    let kept: Vec<&str> = bounded[1].updates.iter().map(|u| u.body.as_str()).collect();
    assert_eq!(kept, ["note 3", "Done."], "the newest updates, oldest first");
    assert!(store.incidents_since(i64::MAX, 10, 10).await.unwrap().iter().all(|r| r.incident.resolved_at.is_none()));
}

async fn updating_a_missing_incident_changes_nothing(store: Store, _url: &str) {
    assert!(!store.update_incident(404, &update("resolved", "no"), 1).await.unwrap());
    assert!(store.incident(404).await.unwrap().is_none());
    assert!(store.incidents_since(0, 10, 10).await.unwrap().is_empty());
}

async fn component_overrides_are_set_replaced_and_cleared(store: Store, _url: &str) {
    assert!(store.component_overrides().await.unwrap().is_empty());
    store.set_component_override("web", Some("major_outage"), 1).await.unwrap();
    store.set_component_override("api", Some("under_maintenance"), 2).await.unwrap();
    store.set_component_override("web", Some("partial_outage"), 3).await.unwrap();
    assert_eq!(
        store.component_overrides().await.unwrap(),
        [("api".to_owned(), "under_maintenance".to_owned()), ("web".to_owned(), "partial_outage".to_owned())]
    );
    store.set_component_override("web", None, 4).await.unwrap();
    store.set_component_override("never-set", None, 5).await.unwrap();
    assert_eq!(store.component_overrides().await.unwrap(), [("api".to_owned(), "under_maintenance".to_owned())]);
}

async fn maintenances_are_listed_by_window(store: Store, _url: &str) {
    let maintenance = |name: &str, from: i64, until: i64| NewMaintenance {
        name: name.into(),
        body: format!("{name} body"),
        component_ids: vec!["api".into()],
        scheduled_for: from,
        scheduled_until: until,
    };
    store.create_maintenance(&maintenance("past", 100, 200), 50).await.unwrap();
    let now = store.create_maintenance(&maintenance("now", 900, 1_100), 60).await.unwrap();
    store.create_maintenance(&maintenance("later", 2_000, 3_000), 70).await.unwrap();
    let listed = store.maintenances_since(1_000, 10).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["later", "now"]);
    assert_eq!(listed[1].id, now);
    assert_eq!((listed[1].scheduled_for, listed[1].scheduled_until, listed[1].created_at), (900, 1_100, 60));
    assert_eq!(listed[1].component_ids, ["api"]);
    assert_eq!(store.maintenances_since(0, 1).await.unwrap().len(), 1);
}

async fn incidents_and_history_survive_close_and_reopen(store: Store, url: &str) {
    let id = store.open_incident(&new_incident("Durable", Some("under_attack")), 10).await.unwrap();
    store.update_incident(id, &update("monitoring", "Watching."), 20).await.unwrap();
    store.record_status_change("api", "degraded_performance", 15).await.unwrap();
    store.set_component_override("web", Some("major_outage"), 16).await.unwrap();
    store.close().await;
    let reopened = Store::open(url).await.expect("reopen");
    let record = reopened.incident(id).await.unwrap().unwrap();
    assert_eq!((record.incident.status.as_str(), record.updates.len()), ("monitoring", 2));
    assert_eq!(reopened.open_incident_for("under_attack").await.unwrap().map(|i| i.id), Some(id));
    assert_eq!(reopened.status_changes_since(0, 10).await.unwrap(), [change("api", "degraded_performance", 15)]);
    assert_eq!(reopened.component_overrides().await.unwrap().len(), 1);
}

async fn exec(store: &Store, sql: &'static str) {
    match store {
        Store::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const AUDIT_KEY: [u8; 32] = [7; 32];

/// Five entries: one through the registration transaction, four on their own.
async fn five_entries(store: &Store) {
    for i in 0..4 {
        let entry = AuditEntry {
            actor: format!("user:{i}"),
            action: "auth.login".into(),
            outcome: "ok".into(),
            ip: Some("127.0.0.1".into()),
            reason: None,
            detail: Some(serde_json::json!({"n": i})),
        };
        store.append_audit(&entry, 1_000 + i).await.unwrap();
    }
    register(store, b"idx5", 2_000).await;
}

async fn an_intact_audit_chain_verifies_and_its_checkpoints_are_signed(store: Store, _url: &str) {
    let empty = store.verify_audit(Some(&AUDIT_KEY)).await.unwrap();
    assert!(empty.intact() && empty.entries == 0, "{empty:?}");
    assert_eq!(store.checkpoint_audit(&AUDIT_KEY, 1).await.unwrap(), None, "nothing to sign yet");
    five_entries(&store).await;
    assert_eq!(store.checkpoint_audit(&AUDIT_KEY, 3_000).await.unwrap(), Some(5));
    assert_eq!(store.checkpoint_audit(&AUDIT_KEY, 3_001).await.unwrap(), None, "nothing new since");
    let report = store.verify_audit(Some(&AUDIT_KEY)).await.unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!((report.entries, report.checkpoints, report.signed_through), (5, 1, Some(5)));
    // With the wrong key, the checkpoint is not the gateway's.
    let forged = store.verify_audit(Some(&[8; 32])).await.unwrap();
    assert_eq!(forged.breaks, [store::ChainBreak::Checkpoint { seq: 5 }]);
}

async fn an_edited_audit_entry_is_found(store: Store, _url: &str) {
    five_entries(&store).await;
    exec(&store, "UPDATE audit_log SET outcome = 'refused' WHERE seq = 3").await;
    let report = store.verify_audit(None).await.unwrap();
    assert!(matches!(report.breaks[..], [store::ChainBreak::Edited { seq: 3, .. }]), "{report:?}");
}

async fn a_removed_audit_entry_is_found(store: Store, _url: &str) {
    five_entries(&store).await;
    exec(&store, "DELETE FROM audit_log WHERE seq = 2").await;
    let report = store.verify_audit(None).await.unwrap();
    assert_eq!(report.breaks, [store::ChainBreak::Removed { after_seq: 1, next_seq: 3 }], "{report:?}");
    // Cutting off the end shows too: the chain's end says where it was.
    exec(&store, "DELETE FROM audit_log WHERE seq >= 4").await;
    let report = store.verify_audit(None).await.unwrap();
    assert!(report.breaks.contains(&store::ChainBreak::Truncated { last_seq: 3, head_seq: 5 }), "{report:?}");
}

async fn an_inserted_audit_entry_is_found(store: Store, _url: &str) {
    five_entries(&store).await;
    // Without a place in the chain, or copying the place and hashes of another.
    exec(&store, "INSERT INTO audit_log (at, actor, action, outcome) VALUES (1500, 'operator', 'key.create', 'ok')")
        .await;
    let report = store.verify_audit(None).await.unwrap();
    assert!(matches!(report.breaks[..], [store::ChainBreak::Unchained { .. }]), "{report:?}");
    exec(&store, "DELETE FROM audit_log WHERE seq IS NULL").await;
    exec(
        &store,
        "INSERT INTO audit_log (at, actor, action, outcome, seq, prev_hash, hash) \
         SELECT 1500, 'operator', 'key.create', 'ok', seq, prev_hash, hash FROM audit_log WHERE seq = 2",
    )
    .await;
    let report = store.verify_audit(None).await.unwrap();
    assert!(report.breaks.iter().any(|b| matches!(b, store::ChainBreak::Inserted { seq: 2, .. })), "{report:?}");
}

async fn reordered_audit_entries_are_found(store: Store, _url: &str) {
    five_entries(&store).await;
    // Swap the places of entries 2 and 3 (through a free place, for the index).
    exec(&store, "UPDATE audit_log SET seq = -1 WHERE seq = 2").await;
    exec(&store, "UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
    exec(&store, "UPDATE audit_log SET seq = 3 WHERE seq = -1").await;
    let report = store.verify_audit(None).await.unwrap();
    assert!(!report.intact());
    assert!(report.breaks.iter().any(|b| matches!(b, store::ChainBreak::Reordered { seq: 3, .. })), "{report:?}");
}

async fn a_rewritten_chain_is_caught_by_its_signed_checkpoint(store: Store, _url: &str) {
    five_entries(&store).await;
    store.checkpoint_audit(&AUDIT_KEY, 3_000).await.unwrap();
    // Someone with write access edits entry 2 and recomputes every hash after it
    // (here: wipes the chain and lets the legacy sealing rebuild it).
    exec(&store, "UPDATE audit_log SET outcome = 'refused' WHERE seq = 2").await;
    exec(&store, "UPDATE audit_log SET seq = NULL, prev_hash = NULL, hash = NULL").await;
    exec(&store, "UPDATE audit_head SET seq = 0").await;
    store.migrate().await.unwrap();
    // ... and makes the checkpoint name the new end, but cannot sign it.
    exec(&store, "UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_head WHERE id = 1)").await;
    let unsigned = store.verify_audit(None).await.unwrap();
    assert!(unsigned.intact(), "a consistent rewrite fools the chain alone: {unsigned:?}");
    let signed = store.verify_audit(Some(&AUDIT_KEY)).await.unwrap();
    assert_eq!(signed.breaks, [store::ChainBreak::Checkpoint { seq: 5 }], "{signed:?}");
}

async fn concurrent_audit_appends_keep_one_chain(store: Store, _url: &str) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let entry = AuditEntry {
                actor: format!("user:{i}"),
                action: "auth.login".into(),
                outcome: "ok".into(),
                ip: None,
                reason: None,
                detail: None,
            };
            store.append_audit(&entry, i).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = store.verify_audit(None).await.unwrap();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.entries, 40);
}

const DAY: i64 = 86_400_000;

async fn use_is_counted_once_a_day_and_pins_are_set_and_lifted(store: Store, _url: &str) {
    let id = store.create_user(&verified_user(b"tenure"), 5).await.unwrap();
    let fresh = store.user(id).await.unwrap().unwrap();
    assert_eq!((fresh.first_used_at, fresh.used_days, fresh.tier_pin.as_deref()), (None, 0, None));
    assert!(store.record_use(id, 10 * DAY + 7).await.unwrap());
    assert!(!store.record_use(id, 10 * DAY + 9_000).await.unwrap(), "same day");
    assert!(store.record_use(id, 11 * DAY).await.unwrap());
    assert!(!store.record_use(id, 10 * DAY + 20).await.unwrap(), "a day already past");
    let used = store.user(id).await.unwrap().unwrap();
    assert_eq!((used.first_used_at, used.used_days), (Some(10 * DAY + 7), 2));
    assert!(!store.record_use(9999, DAY).await.unwrap());
    assert!(store.set_tier_pin(id, Some("established")).await.unwrap());
    assert_eq!(store.user(id).await.unwrap().unwrap().tier_pin.as_deref(), Some("established"));
    assert!(store.set_tier_pin(id, None).await.unwrap());
    assert_eq!(store.user(id).await.unwrap().unwrap().tier_pin, None);
    assert!(!store.set_tier_pin(9999, Some("recent")).await.unwrap());
}

async fn cohorts_are_flagged_once_listed_and_cleared(store: Store, _url: &str) {
    let a = store.create_user(&verified_user(b"cohort-a"), 1).await.unwrap();
    let b = store.create_user(&verified_user(b"cohort-b"), 1).await.unwrap();
    let c = store.create_user(&verified_user(b"cohort-c"), 1).await.unwrap();
    assert_eq!(store.flag_users(&[a, b], "cohort:subnet", 100).await.unwrap(), 2);
    assert_eq!(store.flag_users(&[b, c], "cohort:timing", 200).await.unwrap(), 1, "b keeps its first flag");
    let flagged = store.flagged_users(10).await.unwrap();
    let seen: Vec<(i64, Option<&str>)> = flagged.iter().map(|u| (u.id, u.flag_reason.as_deref())).collect();
    assert_eq!(seen, vec![(c, Some("cohort:timing")), (b, Some("cohort:subnet")), (a, Some("cohort:subnet"))]);
    assert_eq!(store.flagged_users(1).await.unwrap().len(), 1, "bounded");
    assert!(store.clear_flag(a).await.unwrap());
    assert!(!store.clear_flag(a).await.unwrap());
    assert_eq!(store.flagged_users(10).await.unwrap().len(), 2);
}

async fn list_rules_are_kept_replaced_removed_and_expire(store: Store, url: &str) {
    let rule = |kind: &str, cidr: &str, expires_at: Option<i64>, note: &str| ListRuleRow {
        kind: kind.into(),
        cidr: cidr.into(),
        expires_at,
        note: note.into(),
    };
    store.put_list_rule(&rule("block", "203.0.113.0/24", None, "flood"), 1_000).await.unwrap();
    store.put_list_rule(&rule("block", "198.51.100.7/32", Some(5_000), "for a while"), 1_001).await.unwrap();
    store.put_list_rule(&rule("allow", "203.0.113.0/24", None, "partner"), 1_002).await.unwrap();
    // The same (kind, cidr) again replaces it.
    store.put_list_rule(&rule("block", "203.0.113.0/24", None, "flood, again"), 1_003).await.unwrap();
    let all = store.list_rules(2_000).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.contains(&rule("block", "203.0.113.0/24", None, "flood, again")));
    assert!(all.contains(&rule("block", "198.51.100.7/32", Some(5_000), "for a while")));

    assert!(store.delete_list_rule("allow", "203.0.113.0/24").await.unwrap());
    assert!(!store.delete_list_rule("allow", "203.0.113.0/24").await.unwrap(), "gone already");
    // Past its expiry an entry is not read back, and not kept.
    let later = store.list_rules(5_000).await.unwrap();
    assert_eq!(later, vec![rule("block", "203.0.113.0/24", None, "flood, again")]);

    // A restart reads the same entries.
    drop(store);
    let reopened = open_migrated(url).await;
    assert_eq!(reopened.list_rules(6_000).await.unwrap(), later);
}

async fn a_lease_has_one_holder_until_it_lapses(store: Store, _: &str) {
    assert!(store.claim_lease("status", "node-a", 1_000, 3_000).await.unwrap());
    assert!(!store.claim_lease("status", "node-b", 2_000, 3_000).await.unwrap(), "A holds it");
    assert!(store.claim_lease("status", "node-a", 3_500, 3_000).await.unwrap(), "A renews it, to 6,500");
    assert!(!store.claim_lease("status", "node-b", 6_000, 3_000).await.unwrap());
    assert!(store.claim_lease("other", "node-b", 6_000, 3_000).await.unwrap(), "another lease is another name");
    assert!(store.claim_lease("status", "node-b", 6_500, 3_000).await.unwrap(), "A let it lapse");
    assert!(!store.claim_lease("status", "node-a", 7_000, 3_000).await.unwrap());
    // Claimed at the same moment by many, it has one holder.
    let claims = (0..8).map(|i| {
        let store = store.clone();
        async move { store.claim_lease("race", &format!("node-{i}"), 10_000, 3_000).await.unwrap() }
    });
    let won = futures_util::future::join_all(claims).await.into_iter().filter(|w| *w).count();
    assert_eq!(won, 1);
}

async fn operators_enroll_once_with_their_setup_code(store: Store, _url: &str) {
    let id = store.create_operator("alice", "admin", b"setup-a", 1_000, 10).await.unwrap().expect("new name");
    assert_eq!(store.create_operator("alice", "viewer", b"setup-b", 1_000, 10).await.unwrap(), None, "name taken");
    assert_eq!(store.active_operators().await.unwrap(), 0, "not enrolled yet");
    assert!(!store.enroll_operator("alice", b"wrong", "phc", b"totp", 20).await.unwrap());
    assert!(!store.enroll_operator("alice", b"setup-a", "phc", b"totp", 1_000).await.unwrap(), "expired");
    assert!(store.enroll_operator("alice", b"setup-a", "phc", b"totp", 20).await.unwrap());
    assert!(!store.enroll_operator("alice", b"setup-a", "phc2", b"totp2", 21).await.unwrap(), "spent");
    let alice = store.operator_by_name("alice").await.unwrap().unwrap();
    assert_eq!((alice.id, alice.role.as_str(), alice.password_hash.as_deref()), (id, "admin", Some("phc")));
    assert_eq!((alice.totp_secret_enc.as_deref(), alice.setup_hash), (Some(&b"totp"[..]), None));
    assert_eq!(store.active_operators().await.unwrap(), 1);
    assert!(store.advance_operator_totp_step(id, 5).await.unwrap());
    assert!(!store.advance_operator_totp_step(id, 5).await.unwrap(), "replayed step");
    assert!(store.set_operator_role("alice", "viewer").await.unwrap());
    assert!(!store.set_operator_role("bob", "viewer").await.unwrap());
    // A reset takes the credentials away until the new setup code is used.
    assert!(store.reset_operator("alice", b"setup-c", 2_000).await.unwrap());
    let alice = store.operator_by_name("alice").await.unwrap().unwrap();
    assert_eq!((alice.password_hash, alice.totp_secret_enc, alice.role.as_str()), (None, None, "viewer"));
    assert_eq!(store.active_operators().await.unwrap(), 0);
    assert!(store.enroll_operator("alice", b"setup-c", "phc3", b"totp3", 30).await.unwrap());
    assert_eq!(store.operators().await.unwrap().len(), 1);
}

async fn operator_tokens_expire_and_end_with_the_operator(store: Store, _url: &str) {
    let id = store.create_operator("carol", "operator", b"s", 1_000, 1).await.unwrap().unwrap();
    assert!(store.enroll_operator("carol", b"s", "phc", b"totp", 2).await.unwrap());
    store.create_operator_session(b"tok-1", id, 100, 1_000).await.unwrap();
    store.create_operator_session(b"tok-2", id, 100, 1_000).await.unwrap();
    let session = store.operator_session(b"tok-1", 500).await.unwrap().expect("live token");
    assert_eq!((session.name.as_str(), session.role.as_str(), session.expires_at), ("carol", "operator", 1_000));
    assert!(store.operator_session(b"tok-1", 1_000).await.unwrap().is_none(), "expired");
    assert!(store.delete_operator_session(b"tok-1").await.unwrap());
    assert!(!store.delete_operator_session(b"tok-1").await.unwrap());
    assert!(store.disable_operator("carol", 600).await.unwrap());
    assert!(store.operator_session(b"tok-2", 700).await.unwrap().is_none(), "disabled operator's token");
    assert!(!store.disable_operator("carol", 601).await.unwrap(), "already disabled");
    // Re-enabled by a reset, but the old token stays gone.
    assert!(store.reset_operator("carol", b"s2", 5_000).await.unwrap());
    assert!(store.operator_session(b"tok-2", 700).await.unwrap().is_none());
}
