//! The contract every `Store` back-end keeps. Each case is written once, as an
//! `async fn(Store, url)` receiving a freshly opened and migrated store on an
//! empty database (and its URL, for the cases that reopen it), and `contract!`
//! runs it against SQLite (`sqlite::<case>`) and PostgreSQL (`postgres::<case>`).

use store::{Store, StoreError};

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
    assert_eq!(
        store.meta("k").await.unwrap().as_deref(),
        Some("v"),
        "migrating again keeps data"
    );
}

async fn migrate_is_idempotent_on_a_reopened_database(store: Store, url: &str) {
    store.set_meta("k", "v").await.unwrap();
    store.close().await;
    let reopened = Store::open(url).await.expect("reopen");
    reopened.migrate().await.expect("migration after reopen");
    reopened
        .migrate()
        .await
        .expect("second migration after reopen");
    assert_eq!(reopened.meta("k").await.unwrap().as_deref(), Some("v"));
}

async fn ping_answers(store: Store, _url: &str) {
    store.ping().await.expect("ping");
    store.ping().await.expect("second ping");
}

async fn meta_roundtrips(store: Store, _url: &str) {
    store.set_meta("schema_owner", "palisade").await.unwrap();
    store.set_meta("instance_id", "7f3a").await.unwrap();
    assert_eq!(
        store.meta("schema_owner").await.unwrap().as_deref(),
        Some("palisade")
    );
    assert_eq!(
        store.meta("instance_id").await.unwrap().as_deref(),
        Some("7f3a")
    );
}

async fn set_meta_overwrites(store: Store, _url: &str) {
    store.set_meta("k", "first").await.unwrap();
    store.set_meta("other", "untouched").await.unwrap();
    store.set_meta("k", "second").await.unwrap();
    assert_eq!(store.meta("k").await.unwrap().as_deref(), Some("second"));
    assert_eq!(
        store.meta("other").await.unwrap().as_deref(),
        Some("untouched")
    );
}

async fn missing_key_is_none(store: Store, _url: &str) {
    assert_eq!(store.meta("never-set").await.unwrap(), None);
    store.set_meta("set", "v").await.unwrap();
    assert_eq!(store.meta("never-set").await.unwrap(), None);
    assert_eq!(store.meta("").await.unwrap(), None);
    assert_eq!(
        store.meta("SET").await.unwrap(),
        None,
        "keys are case-sensitive"
    );
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
        assert_eq!(
            store.meta(key).await.unwrap().as_deref(),
            Some(value),
            "key {key:?}"
        );
    }
}

async fn concurrent_writes_to_distinct_keys_all_land(store: Store, _url: &str) {
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        writers.spawn(async move {
            store
                .set_meta(&format!("key-{i}"), &format!("value-{i}"))
                .await
        });
    }
    while let Some(joined) = writers.join_next().await {
        joined.expect("writer task").expect("set_meta");
    }
    for i in 0..20 {
        assert_eq!(
            store.meta(&format!("key-{i}")).await.unwrap(),
            Some(format!("value-{i}"))
        );
    }
}

async fn data_survives_close_and_reopen(store: Store, url: &str) {
    store.set_meta("durable", "yes").await.unwrap();
    store.close().await;
    let reopened = Store::open(url).await.expect("reopen");
    assert_eq!(
        reopened.meta("durable").await.unwrap().as_deref(),
        Some("yes")
    );
}

/// Not per back-end: the URL is refused before any back-end is chosen.
#[tokio::test]
async fn unsupported_url_is_refused() {
    for url in ["mysql://x", "mysql://app:s3cret@db/x", "", "sqlite"] {
        match Store::open(url).await {
            Err(StoreError::UnsupportedUrl(shown)) => {
                assert!(
                    !shown.contains("s3cret"),
                    "the error must not print the password: {shown}"
                );
            }
            other => panic!("{url:?}: expected UnsupportedUrl, got {other:?}"),
        }
    }
}
