//! `GET /openapi.json` on the real binary: an OpenAPI 3.1 document that describes every
//! route the public API serves. The list below is the router's, checked both ways: the
//! document must describe exactly these, and the live gateway must serve each of them.
//! A route added to the router belongs in this list, and so in the document.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// Every public route under `/v1`, `/auth`, `/challenge` and `/api/v2`, as the router
/// in `crates/gateway/src/app.rs` lays them out.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/chat/completions"),
    ("post", "/v1/completions"),
    ("post", "/v1/embeddings"),
    ("get", "/v1/models"),
    ("get", "/auth/csrf"),
    ("post", "/auth/register"),
    ("get", "/auth/register/ticket"),
    ("post", "/auth/verify"),
    ("post", "/auth/verify/resend"),
    ("post", "/auth/login"),
    ("post", "/auth/logout"),
    ("get", "/auth/me"),
    ("get", "/auth/sessions"),
    ("delete", "/auth/sessions/{id}"),
    ("get", "/auth/keys"),
    ("post", "/auth/keys"),
    ("delete", "/auth/keys/{prefix}"),
    ("post", "/auth/mfa/totp"),
    ("delete", "/auth/mfa/totp"),
    ("post", "/auth/mfa/totp/confirm"),
    ("post", "/auth/password"),
    ("post", "/auth/password/reset"),
    ("post", "/auth/password/reset/confirm"),
    ("get", "/challenge"),
    ("post", "/challenge"),
    ("get", "/api/v2/summary.json"),
    ("get", "/api/v2/status.json"),
    ("get", "/api/v2/components.json"),
    ("get", "/api/v2/incidents.json"),
    ("get", "/api/v2/incidents/unresolved.json"),
    ("get", "/api/v2/scheduled-maintenances.json"),
    ("get", "/api/v2/scheduled-maintenances/upcoming.json"),
    ("get", "/api/v2/scheduled-maintenances/active.json"),
];

/// Every route of the operators' API, served on the admin listener only.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("post", "/admin/login"),
    ("post", "/admin/operators/enroll"),
    ("get", "/admin/whoami"),
    ("post", "/admin/logout"),
    ("get", "/admin/operators"),
    ("post", "/admin/operators"),
    ("delete", "/admin/operators/{name}"),
    ("put", "/admin/operators/{name}/role"),
    ("post", "/admin/operators/{name}/reset"),
    ("get", "/admin/registration"),
    ("put", "/admin/registration"),
    ("post", "/admin/invites"),
    ("post", "/admin/users/{id}/mfa/reset"),
    ("put", "/admin/users/{id}/mfa/required"),
    ("put", "/admin/users/{id}/tier"),
    ("delete", "/admin/users/{id}/tier"),
    ("delete", "/admin/users/{id}/cohort"),
    ("get", "/admin/audit"),
    ("get", "/admin/flags"),
    ("delete", "/admin/flags/{caller}"),
    ("get", "/admin/incidents"),
    ("post", "/admin/incidents"),
    ("post", "/admin/incidents/{id}/updates"),
    ("post", "/admin/incidents/{id}/resolve"),
    ("put", "/admin/components/{id}"),
    ("post", "/admin/maintenances"),
    ("get", "/admin/blocklist"),
    ("post", "/admin/blocklist"),
    ("delete", "/admin/blocklist"),
    ("get", "/admin/attack-mode"),
    ("put", "/admin/attack-mode"),
];

const PREFIXES: [&str; 5] = ["/v1/", "/auth/", "/challenge", "/api/v2/", "/admin/"];

/// The (method, path) pairs a document describes under `PREFIXES`.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if !PREFIXES.iter().any(|p| path.starts_with(p)) {
            continue;
        }
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                found.insert((method.to_owned(), path.clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_openapi_document_describes_every_public_route() {
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let (ok, key, stderr) = run(dir.path(), &["keys", "create", "--name", "openapi", "--scopes", "inference account"]);
    assert!(ok, "{stderr}");
    let key = key.trim().to_owned();
    let http = http();

    let response = http.get(format!("{}/openapi.json", palisade.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let expected: BTreeSet<(String, String)> =
        ROUTES.iter().chain(ADMIN_ROUTES).map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let found = described(&doc);
    let missing: Vec<_> = expected.difference(&found).collect();
    let unknown: Vec<_> = found.difference(&expected).collect();
    assert!(missing.is_empty() && unknown.is_empty(), "not described: {missing:?}; not in ROUTES: {unknown:?}");

    // Refusals: one shape, described once; the edge's on every path behind it.
    assert!(doc["components"]["schemas"]["Error"]["properties"]["error"].is_object());
    for (method, path) in &found {
        let responses = &doc["paths"][path][method]["responses"];
        let refusals: Vec<&str> =
            responses.as_object().unwrap().keys().map(String::as_str).filter(|s| s.starts_with('4')).collect();
        assert!(!refusals.is_empty(), "{method} {path} lists no refusal");
        // The admin listener has no edge; its 403 is a role refusal.
        if !path.starts_with("/api/v2/") && !path.starts_with("/admin/") {
            for status in ["403", "429"] {
                let schema = &responses[status]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}");
            }
        }
    }

    // The live routers serve each listed route: none falls through to the 404 for
    // unknown paths or answers 405. The admin API answers on its own listener, to the
    // bootstrap secret here (no operator has enrolled).
    let bootstrap = std::fs::read_to_string(dir.path().join("palisade-data/admin.token")).unwrap();
    let routes = ROUTES.iter().map(|r| (r, &palisade.url, key.as_str()));
    let admin_routes = ADMIN_ROUTES.iter().map(|r| (r, &palisade.admin_url, bootstrap.trim()));
    for ((method, path), base, token) in routes.chain(admin_routes) {
        let path = ["{id}", "{prefix}", "{name}", "{caller}"].iter().fold(path.to_string(), |p, v| p.replace(v, "x"));
        let url = format!("{base}{path}");
        let request = http
            .request(method.to_uppercase().parse().unwrap(), url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{}");
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            status != 405 && message != "there is nothing at this address" && message != "unknown API endpoint",
            "{method} {path}: {status} {body}"
        );
    }
    // The CLI's keys belong to the service user, which has no password: re-authenticating
    // as it is refused, not an internal error (schemathesis found the 500).
    for path in ["/auth/password", "/auth/mfa/totp"] {
        let body =
            serde_json::json!({"password": "x", "current_password": "x", "new_password": "long enough password 1"});
        let response = http.post(format!("{}{path}", palisade.url)).bearer_auth(&key).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_credentials", "{path}: {body}");
    }
    // A wrong method is refused in the same shape (axum's own 405 has an empty body).
    let response = http.put(format!("{}/auth/me", palisade.url)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
}
