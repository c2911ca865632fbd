//! Operator accounts on the admin API's own listener: the bootstrap secret, enrolment
//! with a setup code, login with a password and a TOTP code, and what each role may do.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use accounts::totp::{TotpSecret, code_at};
use common::{ADMIN_TOKEN, TestGateway, client, spawn_with_admin_listener};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(
    gw: &TestGateway,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client().request(method, format!("{}{path}", gw.admin_url));
    if let Some(token) = token {
        r = r.bearer_auth(token);
    }
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An enrolled operator: their authenticator's secret.
struct Enrolled {
    name: &'static str,
    password: &'static str,
    secret: TotpSecret,
}

impl Enrolled {
    /// The code the app shows `steps` 30-second steps from now.
    fn code(&self, steps: u64) -> String {
        code_at(&self.secret, unix_now() + 30 * steps)
    }
}

async fn add_and_enroll(gw: &TestGateway, by: &str, name: &'static str, role: &str) -> Enrolled {
    let (status, setup) =
        call(gw, Some(by), Method::POST, "/admin/operators", Some(json!({"name": name, "role": role}))).await;
    assert_eq!(status, StatusCode::CREATED, "{setup}");
    let password = "correct horse battery staple 42";
    let body = json!({"name": name, "setup_code": setup["setup_code"], "password": password});
    let (status, enrolled) = call(gw, None, Method::POST, "/admin/operators/enroll", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    assert!(enrolled["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/"), "{enrolled}");
    let secret = TotpSecret::from_base32(enrolled["totp_secret"].as_str().unwrap()).unwrap();
    Enrolled { name, password, secret }
}

async fn login(gw: &TestGateway, who: &Enrolled, code: &str) -> (StatusCode, Value) {
    let body = json!({"name": who.name, "password": who.password, "totp": code});
    call(gw, None, Method::POST, "/admin/login", Some(body)).await
}

async fn token(gw: &TestGateway, who: &Enrolled) -> String {
    let (status, answer) = login(gw, who, &who.code(0)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_admin_api_answers_only_on_its_own_listener() {
    let gw = spawn_with_admin_listener(|_| {}).await;
    let public = client().get(format!("{}/admin/registration", gw.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND, "the public listener has no /admin");
    let (status, body) = call(&gw, None, Method::GET, "/admin/registration", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("admin_unauthorized")));
    let (status, body) = call(&gw, Some(ADMIN_TOKEN), Method::GET, "/admin/registration", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A malformed path parameter or query string is refused in the error shape, not as
    // axum's plain text (schemathesis found these).
    for (method, path) in [(Method::DELETE, "/admin/flags/-1"), (Method::GET, "/admin/audit?limit=9223372036854775808")]
    {
        let (status, body) = call(&gw, Some(ADMIN_TOKEN), method, path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{path}"
        );
    }
    // The public routes are not served on the admin listener.
    let r = client().get(format!("{}/v1/models", gw.admin_url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn each_role_does_what_it_may_and_is_refused_the_rest() {
    let gw = spawn_with_admin_listener(|_| {}).await;
    let alice = add_and_enroll(&gw, ADMIN_TOKEN, "alice", "admin").await;
    let admin = token(&gw, &alice).await;
    let bob = add_and_enroll(&gw, &admin, "bob", "operator").await;
    let val = add_and_enroll(&gw, &admin, "val", "viewer").await;
    let (operator, viewer) = (token(&gw, &bob).await, token(&gw, &val).await);

    let policy = json!({"mode": "regions", "allow": ["CN"]});
    // A viewer reads, and is refused any change.
    let (status, _) = call(&gw, Some(&viewer), Method::GET, "/admin/registration", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&gw, Some(&viewer), Method::PUT, "/admin/registration", Some(policy.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_required")), "{body}");
    let (status, _) = call(&gw, Some(&viewer), Method::PUT, "/admin/attack-mode", Some(json!({"mode": "on"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An operator changes the service, and is refused managing operators.
    let (status, body) = call(&gw, Some(&operator), Method::PUT, "/admin/registration", Some(policy)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let add = json!({"name": "mallory", "role": "admin"});
    let (status, body) = call(&gw, Some(&operator), Method::POST, "/admin/operators", Some(add.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("role_required")));
    let (status, _) = call(&gw, Some(&operator), Method::GET, "/admin/operators", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "even listing operators is an admin's");
    let (status, _) =
        call(&gw, Some(&viewer), Method::PUT, "/admin/operators/val/role", Some(json!({"role": "admin"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer cannot promote themselves");

    // Once operators exist, the bootstrap secret only manages operators.
    let (status, body) = call(&gw, Some(ADMIN_TOKEN), Method::GET, "/admin/registration", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("bootstrap_only")), "{body}");
    let (status, body) = call(&gw, Some(ADMIN_TOKEN), Method::GET, "/admin/operators", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<(&str, &str)> = body["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["role"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("alice", "admin"), ("bob", "operator"), ("val", "viewer")]);
    assert!(!body.to_string().contains("hash") && !body.to_string().contains("totp"), "no secrets listed: {body}");

    // Every change is audited with the operator's name.
    let (status, audit) = call(&gw, Some(&viewer), Method::GET, "/admin/audit?action=registration.", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["entries"][0]["actor"], "operator:bob", "{audit}");
    let (_, audit) = call(&gw, Some(&admin), Method::GET, "/admin/audit?action=operator.add", None).await;
    let adders: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(adders, ["operator:alice", "operator:alice", "bootstrap"], "newest first: {audit}");
    let (status, me) = call(&gw, Some(&operator), Method::GET, "/admin/whoami", None).await;
    assert_eq!((status, me), (StatusCode::OK, json!({"actor": "operator:bob", "role": "operator"})));

    // An admin disables an operator: their token stops at once.
    let (status, _) = call(&gw, Some(&admin), Method::DELETE, "/admin/operators/bob", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&gw, Some(&operator), Method::GET, "/admin/registration", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A role change applies to the next request.
    let (status, _) =
        call(&gw, Some(&admin), Method::PUT, "/admin/operators/val/role", Some(json!({"role": "operator"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&gw, Some(&viewer), Method::PUT, "/admin/attack-mode", Some(json!({"mode": "auto"}))).await;
    assert_eq!(status, StatusCode::OK);
    // Logging out ends the token.
    let (status, _) = call(&gw, Some(&admin), Method::POST, "/admin/logout", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&gw, Some(&admin), Method::GET, "/admin/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_login_needs_the_password_and_a_fresh_code_and_guessing_is_slowed() {
    let gw = spawn_with_admin_listener(|_| {}).await;
    let alice = add_and_enroll(&gw, ADMIN_TOKEN, "alice", "admin").await;

    let body = json!({"name": "alice", "password": alice.password});
    let (status, answer) = call(&gw, None, Method::POST, "/admin/login", Some(body)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("mfa_required")));
    let wrong = if alice.code(0) == "000000" { "111111" } else { "000000" };
    let (status, answer) = login(&gw, &alice, wrong).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_code")));
    let code = alice.code(0);
    let (status, answer) = login(&gw, &alice, &code).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let token = answer["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("pop_"));
    assert_eq!((answer["role"].as_str(), answer["expires_in_s"].as_u64()), (Some("admin"), Some(3600)));
    let (status, answer) = login(&gw, &alice, &code).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_code")),
        "a code works once"
    );

    // A wrong password, a name that does not exist: the same answer.
    let bad = json!({"name": "alice", "password": "not it at all, sorry", "totp": alice.code(1)});
    let (status, a) = call(&gw, None, Method::POST, "/admin/login", Some(bad)).await;
    let ghost = json!({"name": "ghost", "password": "not it at all, sorry", "totp": "123456"});
    let (status2, b) = call(&gw, None, Method::POST, "/admin/login", Some(ghost)).await;
    assert_eq!((status, status2), (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED));
    assert_eq!(a["error"], b["error"]);

    // Guessing alice's password: after the free failures, every try waits.
    let mut refused = None;
    for i in 0..12 {
        let guess = json!({"name": "alice", "password": format!("guess number {i} for alice"), "totp": "123456"});
        let (status, answer) = call(&gw, None, Method::POST, "/admin/login", Some(guess)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((i, answer["error"]["code"].clone()));
            break;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (at, code) = refused.expect("guessing is slowed down");
    assert!(at <= 6, "refused only after {at} guesses");
    assert_eq!(code, "too_many_attempts");
    // The failures are audited, without the password.
    let (_, audit) = call(&gw, Some(&token), Method::GET, "/admin/audit?action=operator.login", None).await;
    let text = audit.to_string();
    assert!(text.contains("bad_password") && text.contains("unknown_operator"), "{audit}");
    assert!(!text.contains("guess number"), "{audit}");
}

#[tokio::test]
async fn a_setup_code_works_once_and_a_reset_replaces_the_credentials() {
    let gw = spawn_with_admin_listener(|_| {}).await;
    let (status, setup) =
        call(&gw, Some(ADMIN_TOKEN), Method::POST, "/admin/operators", Some(json!({"name": "dan", "role": "viewer"})))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) =
        call(&gw, Some(ADMIN_TOKEN), Method::POST, "/admin/operators", Some(json!({"name": "dan", "role": "admin"})))
            .await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("operator_exists")));
    let enroll = |code: &Value| json!({"name": "dan", "setup_code": code, "password": "another long passphrase 7"});
    let (status, _) =
        call(&gw, None, Method::POST, "/admin/operators/enroll", Some(enroll(&json!("abcdefghjkmnpqrs")))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a wrong setup code");
    // The bootstrap secret still does everything until someone has enrolled.
    let (status, _) = call(&gw, Some(ADMIN_TOKEN), Method::GET, "/admin/registration", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, first) =
        call(&gw, None, Method::POST, "/admin/operators/enroll", Some(enroll(&setup["setup_code"]))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        call(&gw, None, Method::POST, "/admin/operators/enroll", Some(enroll(&setup["setup_code"]))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a setup code works once");
    let weak = json!({"name": "dan", "setup_code": setup["setup_code"], "password": "dan"});
    let (status, answer) = call(&gw, None, Method::POST, "/admin/operators/enroll", Some(weak)).await;
    assert_eq!((status, answer["error"]["type"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request_error")));

    let dan = Enrolled {
        name: "dan",
        password: "another long passphrase 7",
        secret: TotpSecret::from_base32(first["totp_secret"].as_str().unwrap()).unwrap(),
    };
    let old = token(&gw, &dan).await;
    let (status, reset) = call(&gw, Some(ADMIN_TOKEN), Method::POST, "/admin/operators/dan/reset", None).await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let (status, _) = call(&gw, Some(&old), Method::GET, "/admin/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a reset ends the old tokens");
    let (status, _) = login(&gw, &dan, &dan.code(1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "nor do the old password and authenticator work");
    let (status, _) =
        call(&gw, None, Method::POST, "/admin/operators/enroll", Some(enroll(&reset["setup_code"]))).await;
    assert_eq!(status, StatusCode::CREATED);
}
