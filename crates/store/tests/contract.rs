//! The contract every `Store` back-end keeps. Each case is written once, as an
//! `async fn(Store, url)` receiving a freshly opened and migrated store on an
//! empty database (and its URL, for the cases that reopen it), and `contract!`
//! runs it against SQLite (`sqlite::<case>`) and PostgreSQL (`postgres::<case>`).

use store::{AuditEntry, NewApiKey, NewUser, Store, StoreError, UserStatus};

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
    same_phone_registered_concurrently_exactly_one_wins,
    users_are_found_by_blind_index_and_verified,
    totp_steps_only_move_forward,
    recovery_codes_are_single_use,
    sessions_expire_and_can_be_revoked,
    api_keys_are_found_by_prefix_and_revoked_once,
    verification_codes_count_attempts_and_expire,
    invites_are_single_use_and_expire,
    audit_entries_are_appended_and_listed_newest_first,
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

async fn same_phone_registered_concurrently_exactly_one_wins(store: Store, _url: &str) {
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_user(&new_user(b"same-phone"), 1).await })
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
    let found = store.user_by_phone_idx(b"idx-1").await.unwrap().unwrap();
    assert_eq!((found.id, found.status(), found.verified_at), (id, UserStatus::Unverified, None));
    assert_eq!(found.phone_region.as_deref(), Some("CN"));
    assert_eq!(store.user_by_email_idx(b"mail-idx").await.unwrap().unwrap().id, other);
    assert!(store.user_by_phone_idx(b"nobody").await.unwrap().is_none());
    assert!(store.set_user_status(id, UserStatus::Active, 200).await.unwrap());
    assert!(store.set_user_status(id, UserStatus::Active, 300).await.unwrap());
    let user = store.user(id).await.unwrap().unwrap();
    assert_eq!((user.status(), user.verified_at), (UserStatus::Active, Some(200)), "first verification time kept");
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

async fn verification_codes_count_attempts_and_expire(store: Store, _url: &str) {
    let id = store.create_user(&new_user(b"v"), 1).await.unwrap();
    assert!(store.attempt_verification_code(id, 10).await.unwrap().is_none());
    store.put_verification_code(id, b"h1", 100).await.unwrap();
    assert_eq!(store.attempt_verification_code(id, 10).await.unwrap(), Some((b"h1".to_vec(), 1)));
    assert_eq!(store.attempt_verification_code(id, 11).await.unwrap(), Some((b"h1".to_vec(), 2)));
    store.put_verification_code(id, b"h2", 200).await.unwrap();
    assert_eq!(
        store.attempt_verification_code(id, 12).await.unwrap(),
        Some((b"h2".to_vec(), 1)),
        "new code resets attempts"
    );
    assert!(store.attempt_verification_code(id, 200).await.unwrap().is_none(), "expired");
    store.delete_verification_code(id).await.unwrap();
    assert!(store.attempt_verification_code(id, 13).await.unwrap().is_none());
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
