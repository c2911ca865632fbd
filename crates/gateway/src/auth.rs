//! `/auth/*`: registration, verification, login, logout, sessions, MFA and API
//! keys over HTTP, and the identity check in front of `/v1`.
//!
//! Bodies may be JSON or HTML form posts. Sessions travel in an HttpOnly,
//! SameSite=Lax cookie. CSRF: a state-changing request authenticated by the
//! session cookie, and any form post, must carry the `palisade_csrf` cookie's
//! value in an `x-csrf-token` header or a `csrf_token` form field (double
//! submit). A JSON request from another site cannot be sent without a CORS
//! preflight, which Palisade never grants, so JSON without a cookie needs none.

use std::sync::Arc;
use std::time::Duration;

use accounts::service::{AccountError, Login, Principal, Registration};
use accounts::tokens;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::Gateway;
use crate::server::ClientAddr;

pub const SESSION_COOKIE: &str = "palisade_session";
pub const CSRF_COOKIE: &str = "palisade_csrf";
const MAX_AUTH_BODY: usize = 16 * 1024;

/// An account error as the client sees it: the stable JSON error shape.
pub fn account_error(e: &AccountError) -> Response {
    let (status, kind) = match e {
        AccountError::Invalid { .. } | AccountError::WeakPassword(_) | AccountError::InvalidCode => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        AccountError::Refused(_) | AccountError::Suspended => (StatusCode::FORBIDDEN, "permission_error"),
        AccountError::AlreadyRegistered => (StatusCode::CONFLICT, "invalid_request_error"),
        AccountError::InvalidCredentials | AccountError::MfaRequired | AccountError::Unauthenticated => {
            (StatusCode::UNAUTHORIZED, "authentication_error")
        }
        AccountError::TooManyAttempts { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        AccountError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "server_error"),
        AccountError::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
        AccountError::Notify(_) => (StatusCode::BAD_GATEWAY, "server_error"),
        AccountError::Store(_) | AccountError::Crypto(_) | AccountError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
        }
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "account operation failed");
        "internal error; the operator has the details in the log".to_owned()
    } else {
        e.to_string()
    };
    let mut response =
        (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": e.code()}})))
            .into_response();
    let retry = match e {
        AccountError::TooManyAttempts { retry_after } => Some(retry_after.as_secs().max(1)),
        AccountError::Busy => Some(1),
        _ => None,
    };
    if let Some(seconds) = retry {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

fn simple_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

fn new_token() -> String {
    tokens::SessionToken::generate().as_str().to_owned()
}

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

impl Gateway {
    /// Who is asking: an API key in `Authorization`, or a session cookie.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Option<Principal>, AccountError> {
        if let Some(key) = bearer(headers) {
            return self.accounts.key_principal(key).await;
        }
        match cookie(headers, SESSION_COOKIE) {
            Some(token) => self.accounts.session_principal(token).await,
            None => Ok(None),
        }
    }
}

/// A request body read as JSON or as an HTML form, remembering which.
pub struct Input<T> {
    pub value: T,
    pub form: bool,
    pub csrf_field: Option<String>,
}

#[derive(Deserialize)]
struct CsrfField {
    csrf_token: Option<String>,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Input<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body =
            Bytes::from_request(request.map(|b| Body::new(http_body_util::Limited::new(b, MAX_AUTH_BODY))), state)
                .await
                .map_err(|_| {
                    simple_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request_error",
                        "body_too_large",
                        "the request body is too large",
                    )
                })?;
        let bad = |e: String| simple_error(StatusCode::BAD_REQUEST, "invalid_request_error", "invalid_body", &e);
        if form {
            let value = serde_urlencoded::from_bytes(&body).map_err(|e| bad(format!("invalid form: {e}")))?;
            let csrf: CsrfField = serde_urlencoded::from_bytes(&body).unwrap_or(CsrfField { csrf_token: None });
            Ok(Input { value, form, csrf_field: csrf.csrf_token })
        } else {
            let value =
                serde_json::from_slice(&body).map_err(|e| bad(format!("the body is not the expected JSON: {e}")))?;
            Ok(Input { value, form, csrf_field: None })
        }
    }
}

fn csrf_ok(headers: &HeaderMap, field: Option<&str>) -> bool {
    let Some(expected) = cookie(headers, CSRF_COOKIE) else { return false };
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(field);
    presented.is_some_and(|p| tokens::constant_time_eq(p.as_bytes(), expected.as_bytes()))
}

fn csrf_refused() -> Response {
    simple_error(
        StatusCode::FORBIDDEN,
        "permission_error",
        "csrf_failed",
        "missing or wrong CSRF token: send the palisade_csrf cookie's value as x-csrf-token or csrf_token",
    )
}

/// The signed-in user for a state-changing request: a session cookie (with a
/// valid CSRF token) or an API key with the `account` scope.
async fn account_holder(
    gw: &Gateway,
    headers: &HeaderMap,
    method: &Method,
    csrf_field: Option<&str>,
) -> Result<Principal, Response> {
    let principal = match gw.identify(headers).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(account_error(&AccountError::Unauthenticated)),
        Err(e) => return Err(account_error(&e)),
    };
    match &principal.key_prefix {
        Some(_) if !principal.scopes.iter().any(|s| s == "account") => Err(simple_error(
            StatusCode::FORBIDDEN,
            "permission_error",
            "insufficient_scope",
            "this API key lacks the `account` scope",
        )),
        None if *method != Method::GET && !csrf_ok(headers, csrf_field) => Err(csrf_refused()),
        _ => Ok(principal),
    }
}

fn client_ip(request_addr: Option<&ClientAddr>) -> Option<String> {
    request_addr.map(|a| a.0.ip().to_string())
}

fn cookie_header(gw: &Gateway, name: &str, value: &str, max_age: Duration, http_only: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path=/; Max-Age={}; SameSite=Lax", max_age.as_secs());
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if gw.config.auth.cookie_secure {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /auth/csrf`: a CSRF token (also set as a cookie) for HTML forms.
pub async fn csrf(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let token = cookie(&headers, CSRF_COOKIE).map(str::to_owned).unwrap_or_else(new_token);
    let mut response = Json(json!({"csrf_token": token})).into_response();
    let value = cookie_header(&gw, CSRF_COOKIE, &token, Duration::from_secs(gw.accounts_session_ttl()), false);
    response.headers_mut().append(header::SET_COOKIE, value);
    response
}

/// `POST /auth/register`
pub async fn register(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    input: Input<Registration>,
) -> Response {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return csrf_refused();
    }
    let ip = client_ip(addr.as_deref());
    match gw.accounts.register(input.value, ip.as_deref()).await {
        Ok(registered) => (StatusCode::CREATED, Json(registered)).into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct VerifyBody {
    user_id: i64,
    code: String,
}

/// `POST /auth/verify`
pub async fn verify(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    input: Input<VerifyBody>,
) -> Response {
    let ip = client_ip(addr.as_deref());
    match gw.accounts.verify(input.value.user_id, &input.value.code, ip.as_deref()).await {
        Ok(()) => Json(json!({"user_id": input.value.user_id, "status": "active"})).into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct ResendBody {
    user_id: i64,
}

/// `POST /auth/verify/resend`
pub async fn resend(State(gw): State<Arc<Gateway>>, input: Input<ResendBody>) -> Response {
    match gw.accounts.resend_code(input.value.user_id).await {
        Ok(()) => Json(json!({"sent": true})).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `POST /auth/login`: on success sets the session and CSRF cookies.
pub async fn login(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    input: Input<Login>,
) -> Response {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return csrf_refused();
    }
    let ip = client_ip(addr.as_deref());
    match gw.accounts.login(input.value, ip.as_deref()).await {
        Ok(session) => {
            let csrf = new_token();
            let body = json!({
                "user_id": session.user_id,
                "expires_in_s": session.expires_in.as_secs(),
                "mfa_enrollment_required": session.mfa_enrollment_required,
                "csrf_token": csrf,
            });
            let mut response = Json(body).into_response();
            let headers = response.headers_mut();
            headers.append(
                header::SET_COOKIE,
                cookie_header(&gw, SESSION_COOKIE, &session.token, session.expires_in, true),
            );
            headers.append(header::SET_COOKIE, cookie_header(&gw, CSRF_COOKIE, &csrf, session.expires_in, false));
            response
        }
        Err(e) => account_error(&e),
    }
}

/// The `csrf_token` field of a form-encoded body, for endpoints with no other input.
fn form_csrf(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form || body.len() > MAX_AUTH_BODY {
        return None;
    }
    serde_urlencoded::from_bytes::<CsrfField>(body).ok().and_then(|f| f.csrf_token)
}

/// `POST /auth/logout`
pub async fn logout(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let field = form_csrf(&headers, &body);
    let principal = match account_holder(&gw, &headers, &Method::POST, field.as_deref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let ip = client_ip(addr.as_deref());
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = gw.accounts.logout(token, principal.user_id, ip.as_deref()).await {
            return account_error(&e);
        }
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie_header(&gw, SESSION_COOKIE, "", Duration::ZERO, true));
    response
}

/// `GET /auth/me`
pub async fn me(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match gw.identify(&headers).await {
        Ok(Some(p)) => {
            Json(json!({"user_id": p.user_id, "status": p.status.as_str(), "key": p.key_prefix, "scopes": p.scopes}))
                .into_response()
        }
        Ok(None) => account_error(&AccountError::Unauthenticated),
        Err(e) => account_error(&e),
    }
}

/// `GET /auth/sessions`
pub async fn sessions(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::GET, None).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match gw.accounts.sessions(principal.user_id, cookie(&headers, SESSION_COOKIE)).await {
        Ok(list) => Json(json!({"sessions": list})).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `DELETE /auth/sessions/{id}`
pub async fn revoke_session(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::DELETE, None).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let ip = client_ip(addr.as_deref());
    match gw.accounts.revoke_session(principal.user_id, &id, ip.as_deref()).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct NewKeyBody {
    name: String,
    #[serde(default)]
    scopes: String,
    rpm_limit: Option<u32>,
}

/// `POST /auth/keys`: the key is in the answer, once.
pub async fn create_key(State(gw): State<Arc<Gateway>>, headers: HeaderMap, input: Input<NewKeyBody>) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::POST, input.csrf_field.as_deref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let actor = format!("user:{}", principal.user_id);
    match gw
        .accounts
        .create_key(principal.user_id, &input.value.name, &input.value.scopes, input.value.rpm_limit, &actor)
        .await
    {
        Ok((prefix, key)) => (StatusCode::CREATED, Json(json!({"prefix": prefix, "key": key}))).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `GET /auth/keys`
pub async fn list_keys(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::GET, None).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match gw.accounts.keys_of(principal.user_id).await {
        Ok(keys) => Json(json!({"keys": keys})).into_response(),
        Err(e) => account_error(&e),
    }
}

/// `DELETE /auth/keys/{prefix}`
pub async fn revoke_key(State(gw): State<Arc<Gateway>>, headers: HeaderMap, Path(prefix): Path<String>) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::DELETE, None).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let actor = format!("user:{}", principal.user_id);
    match gw.accounts.revoke_key(&prefix, Some(principal.user_id), &actor).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => account_error(&e),
    }
}

/// `POST /auth/mfa/totp`: start enrolment.
pub async fn start_totp(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let field = form_csrf(&headers, &body);
    let principal = match account_holder(&gw, &headers, &Method::POST, field.as_deref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    match gw.accounts.start_totp(principal.user_id).await {
        Ok(enrollment) => Json(enrollment).into_response(),
        Err(e) => account_error(&e),
    }
}

#[derive(Deserialize)]
pub struct ConfirmTotpBody {
    enrollment: String,
    code: String,
}

/// `POST /auth/mfa/totp/confirm`: returns the ten recovery codes, once.
pub async fn confirm_totp(
    State(gw): State<Arc<Gateway>>,
    addr: Option<axum::Extension<ClientAddr>>,
    headers: HeaderMap,
    input: Input<ConfirmTotpBody>,
) -> Response {
    let principal = match account_holder(&gw, &headers, &Method::POST, input.csrf_field.as_deref()).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    let ip = client_ip(addr.as_deref());
    match gw.accounts.confirm_totp(principal.user_id, &input.value.enrollment, &input.value.code, ip.as_deref()).await {
        Ok(codes) => Json(json!({"enabled": true, "recovery_codes": codes})).into_response(),
        Err(e) => account_error(&e),
    }
}
