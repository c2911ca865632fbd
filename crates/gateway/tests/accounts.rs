//! Accounts over HTTP as users and operators see them: registration under each
//! policy, verification, login with MFA, sessions, API keys, the /v1 guard.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn chat() -> Value {
    json!({"model": "palisade-sim", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn a_new_user_registers_verifies_logs_in_and_calls_the_api_with_a_key() {
    let site = Site::new().await;
    let (status, body) = site.post("/auth/register", json!({"phone": CN_PHONE, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "unverified");
    assert_eq!(body["verification_channel"], "sms");
    let user_id = body["user_id"].as_i64().unwrap();

    let outbox = std::fs::read_to_string(&site.gw.outbox).unwrap();
    assert!(!outbox.contains("13800138000"), "the outbox masks the number: {outbox}");
    let (status, body) = site.post("/auth/verify", json!({"user_id": user_id, "code": "000000"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_code")));
    let (status, _) = site.post("/auth/verify", json!({"user_id": user_id, "code": site.code_for(user_id)})).await;
    assert_eq!(status, StatusCode::OK);

    let csrf = site.login(CN_PHONE).await;
    let me: Value = site.http.get(site.url("/auth/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!((me["user_id"].as_i64(), me["status"].as_str()), (Some(user_id), Some("active")));

    // Anonymous API calls are refused in the OpenAI shape.
    let r = client().post(site.url("/v1/chat/completions")).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");

    let r = site
        .http
        .post(site.url("/auth/keys"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    let r = client().post(site.url("/v1/chat/completions")).bearer_auth(&key).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: Value = site.http.get(site.url("/auth/keys")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(&key[created["prefix"].as_str().unwrap().len()..]), "secret never listed");

    let prefix = created["prefix"].as_str().unwrap();
    let r =
        site.http.delete(site.url(&format!("/auth/keys/{prefix}"))).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = client().post(site.url("/v1/chat/completions")).bearer_auth(&key).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "revoked keys stop working");
    let r = client()
        .post(site.url("/v1/chat/completions"))
        .bearer_auth("pal_forged00_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_registration_policy_switches_live_and_login_is_never_affected() {
    let site = Site::new().await;
    site.member(CN_PHONE).await;

    let (status, _) = client()
        .put(site.url("/admin/registration"))
        .json(&json!({"mode": "closed"}))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "admin needs the token");

    let (status, body) = site
        .admin(reqwest::Method::PUT, "/admin/registration", Some(json!({"mode": "regions", "allow": ["CN"]})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = site.post("/auth/register", json!({"phone": US_PHONE, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "region_not_allowed");
    assert!(body["error"]["message"].as_str().unwrap().contains("CN"), "{body}");
    let (status, body) =
        site.post("/auth/register", json!({"email": "newcomer@example.com", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "e-mail-only sign-up cannot satisfy a region rule: {body}");
    let (status, _) = site.post("/auth/register", json!({"phone": CN_PHONE_2, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::CREATED);

    let message = "Sign-ups are paused while we handle an attack.";
    site.admin(reqwest::Method::PUT, "/admin/registration", Some(json!({"mode": "closed", "message": message}))).await;
    let (status, body) = site.post("/auth/register", json!({"phone": "+86 137 0000 0001", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "registration_closed");
    assert!(body["error"]["message"].as_str().unwrap().contains(message));

    // Existing users log in whatever the policy.
    site.login(CN_PHONE).await;

    let (_, policy) = site.admin(reqwest::Method::GET, "/admin/registration", None).await;
    assert_eq!(policy["mode"], "closed");
    let (_, audit) = site.admin(reqwest::Method::GET, "/admin/audit?action=registration.", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit["entries"][0]["actor"], "bootstrap", "no operator has enrolled: the bootstrap secret acts");
}

#[tokio::test]
async fn invite_only_registration_spends_each_invite_once() {
    let site = Site::new().await;
    site.admin(reqwest::Method::PUT, "/admin/registration", Some(json!({"mode": "invite_only"}))).await;
    let (status, body) = site.post("/auth/register", json!({"phone": CN_PHONE, "password": PASSWORD})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("invite_required")));
    let (status, invite) = site.admin(reqwest::Method::POST, "/admin/invites", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let invite = invite["invite"].as_str().unwrap();
    let (status, body) =
        site.post("/auth/register", json!({"phone": CN_PHONE, "password": PASSWORD, "invite": invite})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        site.post("/auth/register", json!({"phone": CN_PHONE_2, "password": PASSWORD, "invite": invite})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_invite")));
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_never_a_500() {
    let site = Site::new().await;
    let cases = [
        (json!({"phone": "not a number", "password": PASSWORD}), "invalid_phone_characters"),
        (json!({"phone": "+86 123", "password": PASSWORD}), "invalid_phone"),
        (json!({"phone": "0".repeat(400), "password": PASSWORD}), "too_long"),
        (json!({"phone": "", "email": "", "password": PASSWORD}), "identifier_required"),
        (json!({"email": "no-at-sign", "password": PASSWORD}), "invalid_email"),
        (json!({"email": "раураl@example.com", "password": PASSWORD}), "email_local_part_invalid"),
        (json!({"phone": CN_PHONE, "password": "short"}), "too_short"),
        (json!({"phone": CN_PHONE, "password": "password123"}), "too_common"),
        (json!({"phone": CN_PHONE, "password": "x".repeat(2000)}), "too_long"),
    ];
    for (body, code) in cases {
        let (status, answer) = site.post("/auth/register", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} -> {answer}");
        assert!(!answer["error"]["message"].as_str().unwrap().is_empty());
    }
    for raw in [&b"{\"phone\": \"\xff\xfe\", \"password\": \"x\"}"[..], b"[]", b"{", b""] {
        let r = client()
            .post(site.url("/auth/register"))
            .header("content-type", "application/json")
            .body(raw.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "invalid_body");
    }
    let r = client().post(site.url("/auth/login")).json(&json!({"password": PASSWORD})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn concurrent_sign_ups_of_one_phone_all_wait_and_the_first_to_verify_gets_it() {
    let site = Site::new().await;
    let attempts = (0..4).map(|_| site.post("/auth/register", json!({"phone": CN_PHONE, "password": PASSWORD})));
    let results = futures_util::future::join_all(attempts).await;
    assert!(results.iter().all(|(s, _)| *s == StatusCode::CREATED), "{results:?}");
    let ids: Vec<i64> = results.iter().map(|(_, b)| b["user_id"].as_i64().unwrap()).collect();
    let codes: Vec<String> = ids.iter().map(|id| site.code_for(*id)).collect();
    let (status, _) = site.post("/auth/verify", json!({"user_id": ids[2], "code": codes[2]})).await;
    assert_eq!(status, StatusCode::OK);
    for (id, code) in ids.iter().zip(&codes).filter(|(id, _)| **id != ids[2]) {
        let (status, body) = site.post("/auth/verify", json!({"user_id": id, "code": code})).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_code")));
    }
}

#[tokio::test]
async fn login_does_not_reveal_accounts_and_backs_off_after_failures() {
    let site = Site::new().await;
    site.member(CN_PHONE).await;
    let (unknown_status, unknown) = site.post("/auth/login", json!({"phone": US_PHONE, "password": PASSWORD})).await;
    let (wrong_status, wrong) =
        site.post("/auth/login", json!({"phone": CN_PHONE, "password": "wrong password here"})).await;
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown, wrong, "same answer for an unknown account and a wrong password");
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);

    let mut last = (StatusCode::OK, Value::Null, None);
    for _ in 0..6 {
        let r = site
            .http
            .post(site.url("/auth/login"))
            .json(&json!({"phone": CN_PHONE, "password": "still wrong!!"}))
            .send()
            .await
            .unwrap();
        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        last = (r.status(), r.json().await.unwrap(), retry);
    }
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS, "{:?}", last.1);
    assert_eq!(last.1["error"]["code"], "too_many_attempts");
    assert!(last.2.is_some(), "Retry-After on 429");
    // Even the right password waits while backing off.
    let (status, _) = site.post("/auth/login", json!({"phone": CN_PHONE, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address).
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(TEST_AGENT)
        .local_address(std::net::IpAddr::from(source))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn credential_stuffing_from_elsewhere_does_not_lock_the_owner_out_of_a_known_network() {
    let site = Site::new().await;
    site.member(CN_PHONE).await;
    let login = |source: [u8; 4], password: &'static str| {
        let url = site.url("/auth/login");
        async move {
            let r = client_from(source).post(url).json(&json!({"phone": CN_PHONE, "password": password})).send();
            r.await.unwrap().status()
        }
    };
    // The owner signs in from home (127.77.1.0/24).
    assert_eq!(login([127, 77, 1, 10], PASSWORD).await, StatusCode::OK);
    // A botnet guesses from 12 other networks until the account backs off.
    let mut statuses = Vec::new();
    for net in 0..12u8 {
        statuses.push(login([127, 78, net, 1], "Summer2024!").await);
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    // The right password from a network the account does not know still waits...
    assert_eq!(login([127, 79, 0, 1], PASSWORD).await, StatusCode::TOO_MANY_REQUESTS);
    // ...but the owner, on another device at home, gets in.
    assert_eq!(login([127, 77, 1, 20], PASSWORD).await, StatusCode::OK);
    // And the known network has its own back-off: guessing from there is held too.
    let mut home = Vec::new();
    for _ in 0..7 {
        home.push(login([127, 77, 1, 30], "Winter2024!").await);
    }
    assert_eq!(home.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{home:?}");
}

#[tokio::test]
async fn totp_mfa_enrols_guards_login_refuses_replays_and_recovers() {
    let site = Site::new().await;
    let user_id = site.member(CN_PHONE).await;
    let csrf = site.login(CN_PHONE).await;
    let r = site
        .http
        .post(site.url("/auth/mfa/totp"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let enrollment: Value = r.json().await.unwrap();
    let uri = enrollment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = accounts::totp::TotpSecret::from_base32(enrollment["secret"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let code = accounts::totp::code_at(&secret, now);
    let r = site
        .http
        .post(site.url("/auth/mfa/totp/confirm"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"enrollment": enrollment["enrollment"], "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let confirmed: Value = r.json().await.unwrap();
    let recovery: Vec<String> = serde_json::from_value(confirmed["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);

    let fresh = client();
    let login = |extra: Value| {
        let mut body = json!({"phone": CN_PHONE, "password": PASSWORD});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        fresh.post(site.url("/auth/login")).json(&body).send()
    };
    let r = login(json!({})).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "mfa_required");
    // The enrolment code's step is spent: the next step's code logs in, once.
    let next = accounts::totp::code_at(&secret, now + 30);
    assert_eq!(login(json!({"totp": next})).await.unwrap().status(), StatusCode::OK);
    assert_eq!(login(json!({"totp": next})).await.unwrap().status(), StatusCode::BAD_REQUEST, "replayed code");
    assert_eq!(login(json!({"recovery_code": recovery[0]})).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        login(json!({"recovery_code": recovery[0]})).await.unwrap().status(),
        StatusCode::BAD_REQUEST,
        "used recovery code"
    );

    let (status, _) = site.admin(reqwest::Method::POST, &format!("/admin/users/{user_id}/mfa/reset"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(login(json!({})).await.unwrap().status(), StatusCode::OK, "MFA removed by the operator");
}

#[tokio::test]
async fn cookie_requests_need_the_csrf_token_and_sessions_can_be_revoked() {
    let site = Site::new().await;
    site.member(CN_PHONE).await;
    let csrf = site.login(CN_PHONE).await;
    let r = site.http.post(site.url("/auth/keys")).json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "csrf_failed");
    let r = site
        .http
        .post(site.url("/auth/keys"))
        .header("x-csrf-token", "wrong")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A form post without the token is refused before it is even parsed.
    let r = client()
        .post(site.url("/auth/login"))
        .form(&[("phone", CN_PHONE), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A second session from another client; list, then revoke it.
    let other = reqwest::Client::builder().user_agent(TEST_AGENT).cookie_store(true).build().unwrap();
    other.post(site.url("/auth/login")).json(&json!({"phone": CN_PHONE, "password": PASSWORD})).send().await.unwrap();
    let listed: Value = site.http.get(site.url("/auth/sessions")).send().await.unwrap().json().await.unwrap();
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let theirs = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap();
    let r = site
        .http
        .delete(site.url(&format!("/auth/sessions/{theirs}")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(other.get(site.url("/auth/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    let r = site.http.post(site.url("/auth/logout")).header("x-csrf-token", &csrf).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(site.http.get(site.url("/auth/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_events_are_audited_without_personal_data() {
    let site = Site::new().await;
    site.member(CN_PHONE).await;
    site.login(CN_PHONE).await;
    site.post("/auth/login", json!({"phone": CN_PHONE, "password": "wrong wrong wrong"})).await;
    let (_, audit) = site.admin(reqwest::Method::GET, "/admin/audit?limit=50", None).await;
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    for expected in [("auth.register", "ok"), ("auth.verify", "ok"), ("auth.login", "ok"), ("auth.login", "failed")] {
        assert!(actions.contains(&expected), "{expected:?} missing from {actions:?}");
    }
    let text = audit.to_string();
    assert!(!text.contains("13800138000") && !text.contains(PASSWORD), "{text}");
    assert!(audit["entries"][0]["ip"].as_str().unwrap().starts_with("127."));
}

/// Search the raw database for what a user typed: it must not be there.
async fn assert_personal_data_absent(raw: &[u8]) {
    for needle in ["13800138000", "8613800138000", "alice.secret@example.com"] {
        assert!(!raw.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} found in the raw database");
    }
}

#[tokio::test]
async fn phone_and_email_are_not_stored_in_the_clear_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pii.db");
    let url = format!("sqlite://{}", db.display());
    let site = Site::on(Some(&url)).await;
    let (status, body) = site
        .post("/auth/register", json!({"phone": CN_PHONE, "email": "alice.secret@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    site.gw.gateway.store().close().await; // checkpoint the WAL into the file
    let mut raw = std::fs::read(&db).unwrap();
    for suffix in ["-wal", "-shm"] {
        raw.extend(std::fs::read(format!("{}{suffix}", db.display())).unwrap_or_default());
    }
    assert!(raw.len() > 4096);
    assert_personal_data_absent(&raw).await;
}

#[tokio::test]
async fn phone_and_email_are_not_stored_in_the_clear_in_postgres() {
    let Some(db) = testkit::postgres::fresh_postgres().await else { return };
    let site = Site::on(Some(&db.url)).await;
    let (status, body) = site
        .post("/auth/register", json!({"phone": CN_PHONE, "email": "alice.secret@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let dump = testkit::postgres::pg_dump(&db.url).await;
    assert!(dump.len() > 1000 && dump.windows(5).any(|w| w == b"users"), "a real dump");
    assert_personal_data_absent(&dump).await;
}

#[tokio::test]
async fn an_account_required_to_use_mfa_cannot_use_the_api_until_it_enrols() {
    let site = Site::new().await;
    let user_id = site.member(CN_PHONE).await;
    let (status, _) = site
        .admin(reqwest::Method::PUT, &format!("/admin/users/{user_id}/mfa/required"), Some(json!({"required": true})))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = site.post("/auth/login", json!({"phone": CN_PHONE, "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mfa_enrollment_required"], true);
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let r = site.http.post(site.url("/v1/chat/completions")).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "no API use before enrolment");

    let enrollment: Value = site
        .http
        .post(site.url("/auth/mfa/totp"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = accounts::totp::TotpSecret::from_base32(enrollment["secret"].as_str().unwrap()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let r = site
        .http
        .post(site.url("/auth/mfa/totp/confirm"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"enrollment": enrollment["enrollment"], "code": accounts::totp::code_at(&secret, now)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = site.http.post(site.url("/v1/chat/completions")).json(&chat()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "enrolled: the session may use the API");
}

#[tokio::test]
async fn codes_reach_a_real_sms_provider_through_the_signed_webhook() {
    use axum::body::Bytes;
    use hmac::{Hmac, KeyInit, Mac};

    let (tx, mut rx) = tokio::sync::mpsc::channel::<(axum::http::HeaderMap, Bytes)>(4);
    let receiver = axum::Router::new().route(
        "/send",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                tx.send((headers, body)).await.unwrap();
                "queued"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/send", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let secret = b"webhook-secret-for-tests";
    let notifier = accounts::notify::Notifier::webhook(&hook, secret).unwrap();
    let config = accounts::service::AccountsConfig { hash_threads: 1, ..Default::default() };
    let accounts = accounts::service::Accounts::new(
        fresh_store(&dir).await,
        accounts::crypto::PiiKeys::generate(),
        notifier,
        config,
    )
    .await
    .unwrap();
    let gw = spawn_gateway_with(accounts, vec![], dir).await;
    let r = client()
        .post(format!("{}/auth/register", gw.url))
        .json(&json!({"phone": CN_PHONE, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (headers, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((message["channel"].as_str(), message["to"].as_str()), (Some("sms"), Some("+8613800138000")));
    assert!(message["text"].as_str().unwrap().chars().filter(char::is_ascii_digit).count() >= 6);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(&body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(headers["x-palisade-signature"].to_str().unwrap(), format!("sha256={expected}"));
}

#[tokio::test]
async fn a_login_flood_is_shed_with_503_instead_of_queueing_without_bound() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    // One hashing thread and no queue: the second concurrent login cannot wait.
    let config = accounts::service::AccountsConfig {
        hash_threads: 1,
        hash_queue: 0,
        login_free_failures: 1000,
        ..Default::default()
    };
    let outbox = accounts::notify::Notifier::outbox(dir.path().join("outbox.jsonl"));
    let accounts = accounts::service::Accounts::new(
        fresh_store(&dir).await,
        accounts::crypto::PiiKeys::generate(),
        outbox,
        config,
    )
    .await
    .unwrap();
    let gw = spawn_gateway_with(accounts, vec![], dir).await;
    let c = client();
    let attempts = (0..12).map(|i| {
        c.post(format!("{}/auth/login", gw.url))
            .json(&json!({"phone": CN_PHONE, "password": format!("guess number {i}")}))
            .send()
    });
    let answers = futures_util::future::join_all(attempts).await;
    let mut shed = 0;
    for answer in answers {
        let r = answer.unwrap();
        match r.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().get("retry-after").is_some());
                assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "busy");
                shed += 1;
            }
            StatusCode::UNAUTHORIZED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(shed >= 1, "the pool admitted twelve concurrent hashes with room for one");
}

#[tokio::test]
async fn the_public_status_page_shows_the_registration_policy() {
    let site = Site::new().await;
    let summary = || async {
        client().get(site.url("/api/v2/summary.json")).send().await.unwrap().json::<Value>().await.unwrap()
    };
    let registration = |s: &Value| {
        s["components"].as_array().unwrap().iter().find(|c| c["name"] == "Registration").unwrap()["status"].clone()
    };
    let before = summary().await;
    assert_eq!(before["status"]["indicator"], "none", "{before}");
    assert_eq!(registration(&before), "operational");

    site.admin(reqwest::Method::PUT, "/admin/registration", Some(json!({"mode": "regions", "allow": ["CN"]}))).await;
    let limited = summary().await;
    assert_eq!(registration(&limited), "degraded_performance");
    let incident = &limited["incidents"][0];
    assert_eq!(incident["name"], "New registrations are limited");
    let body = incident["incident_updates"][0]["body"].as_str().unwrap();
    assert!(body.contains("phone numbers from CN") && body.contains("Existing users can sign in"), "{body}");
    let login = limited["components"].as_array().unwrap().iter().find(|c| c["name"] == "Login").unwrap();
    assert_eq!(login["status"], "operational", "login is untouched by the policy");
    let unresolved: Value =
        client().get(site.url("/api/v2/incidents/unresolved.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(unresolved["incidents"].as_array().unwrap().len(), 1);

    let html = client().get(site.url("/status")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("New registrations are limited"), "the HTML page says it too");
    let badge = client().get(site.url("/status/badge.svg")).send().await.unwrap();
    assert_eq!(badge.headers()["content-type"], "image/svg+xml");

    site.admin(reqwest::Method::PUT, "/admin/registration", Some(json!({"mode": "open"}))).await;
    let reopened = summary().await;
    assert_eq!(registration(&reopened), "operational");
    assert!(reopened["incidents"].as_array().unwrap().is_empty());
    let r = client().get(site.url("/api/v2/nothing.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// A phone sign-up from 127.0.`base + n / 200`.`1 + n % 200` (a /24 per 200 `n`), with
/// a proof of work when given; the status and the body.
async fn text_sign_up(gw: &TestGateway, base: u8, n: u32, phone: &str, proof: Option<&str>) -> (StatusCode, Value) {
    let c = client_from([127, 0, base + (n / 200) as u8, 1 + (n % 200) as u8]);
    let mut r = c.post(format!("{}/auth/register", gw.url)).json(&json!({"phone": phone, "password": PASSWORD}));
    if let Some(p) = proof {
        r = r.header("x-palisade-proof", p);
    }
    let r = r.send().await.unwrap();
    (r.status(), r.json::<Value>().await.unwrap())
}

/// A gateway with these account settings (texts' budgets and breaker), in front of an
/// instant simulated model, without route limits; and that model.
async fn texts_gateway(accounts: accounts::service::AccountsConfig) -> (Sim, TestGateway) {
    let sim = spawn_sim(instant_sim()).await;
    let keys = accounts::crypto::PiiKeys::generate();
    let gw = spawn_node(None, keys, accounts, vec![upstream("sim", &sim.server.url)], without_route_limits).await;
    (sim, gw)
}

/// Sign-ups to `number(n)` for `n` from `first` on until one is held (403): not before
/// `n` reaches `held_at`, and within two texts of it (the sliding window weighs the
/// previous fixed window by its overlap, so texts just either side of a window's start
/// count a hair under what was sent). The `n` held, and the refusal.
async fn until_held(
    gw: &TestGateway,
    base: u8,
    first: u32,
    held_at: u32,
    number: impl Fn(u32) -> String,
) -> (u32, Value) {
    for n in first..=held_at + 2 {
        let (status, body) = text_sign_up(gw, base, n, &number(n), None).await;
        if status == StatusCode::FORBIDDEN && n >= held_at {
            return (n, body);
        }
        assert_eq!(status, StatusCode::CREATED, "text {n}: {body}");
    }
    panic!("texts were never held");
}

#[tokio::test]
async fn texts_to_a_range_whose_codes_are_never_entered_pause_while_other_countries_go_on() {
    let (_sim, gw) =
        texts_gateway(accounts::service::AccountsConfig { sms_breaker_min_sends: 10, ..test_accounts() }).await;
    // Pumping: sign-ups to numbers of one premium-looking range, none ever verified: texts
    // to that range stop.
    let (sent, body) = until_held(&gw, 50, 0, 10, |n| format!("+44 7400 123{n:03}")).await;
    assert_eq!(body["error"]["code"], "sms_paused", "{body}");
    // A genuine newcomer elsewhere (another country, another network) signs up and verifies.
    let (status, body) = text_sign_up(&gw, 50, 400, CN_PHONE, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user_id = body["user_id"].as_i64().unwrap();
    let code = code_in(&gw.outbox, user_id);
    let r = client()
        .post(format!("{}/auth/verify", gw.url))
        .json(&json!({"user_id": user_id, "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    for line in [
        &format!("palisade_sms_sent_total{{country=\"GB\"}} {sent}"),
        "palisade_sms_verified_total{country=\"GB\"} 0",
        "palisade_sms_paused_total{country=\"GB\"} 1",
        "palisade_sms_sent_total{country=\"CN\"} 1",
        "palisade_sms_verified_total{country=\"CN\"} 1",
        &format!("palisade_sms_estimated_cost_total{{country=\"GB\"}} {}", f64::from(sent * 50_000) / 1e6),
    ] {
        assert!(
            metrics.contains(line),
            "{line} in\n{}",
            metrics.lines().filter(|l| l.contains("sms")).collect::<Vec<_>>().join("\n")
        );
    }
}

async fn audit_of(gw: &TestGateway, action: &str) -> Vec<Value> {
    let (_, body) = admin_call_json(gw, reqwest::Method::GET, &format!("/admin/audit?action={action}"), None).await;
    body["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn texts_to_a_range_with_few_codes_entered_cost_a_proof_of_work_and_the_status_page_says_so() {
    let accounts =
        accounts::service::AccountsConfig { sms_breaker_min_sends: 10, sms_proof_difficulty: 10, ..test_accounts() };
    let (_sim, gw) = texts_gateway(accounts).await;
    // Ten texts to one range from one network, two of their codes entered: 20 %, under
    // the proof line (30 %).
    for n in 0..10 {
        let (status, body) = text_sign_up(&gw, 61, n, &format!("+44 7400 123{n:03}"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        if n < 2 {
            let user_id = body["user_id"].as_i64().unwrap();
            let code = code_in(&gw.outbox, user_id);
            let r = client_from([127, 0, 61, 1])
                .post(format!("{}/auth/verify", gw.url))
                .json(&json!({"user_id": user_id, "code": code}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    let (_, body) = until_held(&gw, 61, 10, 10, |n| format!("+44 7400 123{n:03}")).await;
    assert_eq!(body["error"]["code"], "sms_proof_required", "{body}");
    let challenge = &body["challenge"];
    assert_eq!(challenge["difficulty"], 10, "{body}");
    let nonce = shield::pow::solve(challenge["seed"].as_str().unwrap(), 10).unwrap();
    let proof = format!("{} {nonce}", challenge["token"].as_str().unwrap());
    let (status, body) = text_sign_up(&gw, 61, 20, "+44 7400 123500", Some(&proof)).await;
    assert_eq!(status, StatusCode::CREATED, "the paid text goes out: {body}");
    // A proof pays for one text only.
    let (status, body) = text_sign_up(&gw, 61, 21, "+44 7400 123501", Some(&proof)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "challenge_failed", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("pow_replayed"), "{body}");

    // The public page says texts are limited, and that the rest works.
    let summary = until(Duration::from_secs(10), "the texts notice on the status page", || async {
        let s: Value = client().get(format!("{}/api/v2/summary.json", gw.url)).send().await.ok()?.json().await.ok()?;
        let open = s["incidents"].as_array()?.iter().any(|i| i["name"] == "Sign-up texts limited for some numbers");
        open.then_some(s)
    })
    .await;
    let registration =
        summary["components"].as_array().unwrap().iter().find(|c| c["name"] == "Registration").unwrap().clone();
    assert_eq!(registration["status"], "degraded_performance", "{summary}");
    // The audit log names the range and what the breaker did.
    let held = audit_of(&gw, "sms.breaker").await;
    assert!(held.iter().any(|e| e["outcome"] == "proof_required" && e["detail"]["key"] == "+447400"), "{held:?}");
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    for line in ["palisade_sms_proof_required_total{country=\"GB\"} 1", "palisade_sms_held{gate=\"proof_required\"} "] {
        assert!(
            metrics.contains(line),
            "{line} in {}",
            metrics.lines().filter(|l| l.contains("sms")).collect::<Vec<_>>().join("\n")
        );
    }
}

#[tokio::test]
async fn pumping_abroad_narrows_registration_to_the_home_regions_until_conversion_recovers() {
    let accounts = accounts::service::AccountsConfig {
        sms_breaker_min_sends: 10,
        // A short window, so the test sees the evidence slide out and registration reopen
        // (long enough for eleven sign-ups, each a password hash, on a loaded machine).
        sms_breaker_window_s: 8,
        sms_home_regions: vec!["CN".into()],
        sms_auto_narrow: true,
        ..test_accounts()
    };
    let (_sim, gw) = texts_gateway(accounts).await;
    let policy = || async { admin_call_json(&gw, reqwest::Method::GET, "/admin/registration", None).await.1 };
    assert_eq!(policy().await["mode"], "open");
    // Texts to numbers all over one country abroad, none ever entered.
    let (_, body) = until_held(&gw, 70, 0, 10, |n| format!("+44 74{n:02} 123456")).await;
    assert_eq!(body["error"]["code"], "sms_paused", "the whole country is paused: {body}");

    // Registration narrows to the home region by itself; home numbers still sign up.
    let narrowed = until(Duration::from_secs(10), "registration narrowed", || async {
        let p = policy().await;
        (p["mode"] == "regions").then_some(p)
    })
    .await;
    assert_eq!(narrowed["allow"], json!(["CN"]), "{narrowed}");
    let (status, body) = text_sign_up(&gw, 70, 11, "+44 7400 999999", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "region_not_allowed", "{body}");
    // (From a network of its own: the pumpers' subnet is held too.)
    let (status, body) = text_sign_up(&gw, 70, 400, CN_PHONE, None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_registration_narrowed 1"), "{metrics}");

    // Once the evidence has slid out of the window (no texts abroad meanwhile), it opens.
    until(Duration::from_secs(45), "registration open again", || async {
        (policy().await["mode"] == "open").then_some(())
    })
    .await;
    // The audit entry is written beside the change, so it may land just after it is seen.
    until(Duration::from_secs(10), "narrowed, then opened, both audited", || async {
        let changes = audit_of(&gw, "registration.policy").await;
        (changes.iter().filter(|e| e["actor"] == "sms-breaker").count() == 2).then_some(())
    })
    .await;
    let (status, body) = text_sign_up(&gw, 70, 401, "+44 7500 123456", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
