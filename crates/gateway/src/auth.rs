//! `/auth/*`: registration, verification, login, logout, sessions, MFA and API
//! keys over HTTP, on the account service.
//!
//! Bodies are JSON (`Content-Type: application/json`, required: a cross-site form
//! cannot send it) or HTML form posts. Sessions travel in an HttpOnly, SameSite=Lax
//! cookie. CSRF: a state-changing request must not come from another site
//! (`Origin`, `Sec-Fetch-Site`; see [`same_origin`]); one authenticated by the
//! session cookie, and any form post (login and sign-up included), must also carry
//! the `palisade_csrf` cookie's value in an `x-csrf-token` header or a `csrf_token`
//! form field (double submit).
//!
//! Who is asking was looked up once by the edge and is read from the request's
//! context; the client is the one the listener resolved.

use std::sync::Arc;
use std::time::Duration;

use accounts::policy::RegistrationRefused;
use accounts::service::factors::{PasswordChange, Reauth, ResetConfirmation, ResetRequest};
use accounts::service::{AccountError, Accounts, Login, Principal, Registration};
use accounts::sms::TextProof;
use accounts::tokens;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::clock::now;
use crate::cookies::{CSRF_COOKIE, CookiePolicy, SESSION_COOKIE, cookie};
use crate::edge::{Edge, PROOF_HEADER};
use crate::error::{ApiError, Reject};
use crate::request::{Identity, IdentityError, RequestContext};

const MAX_AUTH_BODY: usize = 16 * 1024;

/// What the `/auth` handlers use: the account service and how cookies are written.
#[derive(Clone)]
pub struct AuthState {
    pub accounts: Arc<Accounts>,
    pub cookies: CookiePolicy,
}

impl AuthState {
    fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.accounts.config().session_ttl_s)
    }
}

fn new_token() -> String {
    tokens::SessionToken::generate().as_str().to_owned()
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

fn media_type(headers: &HeaderMap) -> &str {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    value.split(';').next().unwrap_or("").trim()
}

fn is_form(headers: &HeaderMap) -> bool {
    media_type(headers).eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// `application/json` or `application/<something>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let media = media_type(headers).to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Input<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let form = is_form(request.headers());
        if !form && !is_json(request.headers()) {
            return Err(ApiError::new(
                Reject::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json` (or as an HTML form)",
            ));
        }
        let body =
            Bytes::from_request(request.map(|b| Body::new(http_body_util::Limited::new(b, MAX_AUTH_BODY))), state)
                .await
                .map_err(|_| ApiError::new(Reject::BodyTooLarge, "the request body is too large"))?;
        let bad = |e: String| ApiError::new(Reject::InvalidBody, e);
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

/// Refuses a state-changing request that a browser says came from another site:
/// `Sec-Fetch-Site` other than `same-origin` or `none` (typed or bookmarked), or an
/// `Origin` whose host is not this request's `Host`. Clients that send neither (API
/// clients, older browsers) pass; the CSRF token still guards cookies and forms.
pub async fn same_origin(request: Request, next: Next) -> Result<axum::response::Response, ApiError> {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && cross_site(request.headers()) {
        return Err(ApiError::new(Reject::CrossOrigin, "this request came from another site and was refused"));
    }
    Ok(next.run(request).await)
}

fn cross_site(headers: &HeaderMap) -> bool {
    // A browser that sends Sec-Fetch-Site knows better than Origin: pages with a
    // no-referrer policy send `Origin: null` even on same-origin form posts.
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    // Without Sec-Fetch-Site, `Origin: null` (sandboxed frames, file pages) is not this site.
    let origin_host = origin.split_once("://").map(|(_, rest)| rest.trim_end_matches('/'));
    origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host))
}

fn csrf_ok(headers: &HeaderMap, field: Option<&str>) -> bool {
    let Some(expected) = cookie(headers, CSRF_COOKIE) else { return false };
    let presented = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(field);
    presented.is_some_and(|p| tokens::constant_time_eq(p.as_bytes(), expected.as_bytes()))
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        Reject::CsrfFailed,
        "missing or wrong CSRF token: send the palisade_csrf cookie's value as x-csrf-token or csrf_token",
    )
}

/// The signed-in user, from the identity the edge looked up.
fn signed_in(ctx: &RequestContext) -> Result<Arc<Principal>, ApiError> {
    match &ctx.identity {
        Identity::Known(p) => Ok(p.clone()),
        Identity::Refused(IdentityError::Unavailable) => Err(ApiError::credentials_unavailable()),
        Identity::Anonymous | Identity::Refused(IdentityError::Invalid) => {
            Err(ApiError::from(&AccountError::Unauthenticated))
        }
    }
}

/// The signed-in user for an account request: a session cookie (with a valid CSRF
/// token when the request changes something) or an API key with the `account` scope.
fn account_holder(
    ctx: &RequestContext,
    headers: &HeaderMap,
    method: &Method,
    csrf_field: Option<&str>,
) -> Result<Arc<Principal>, ApiError> {
    let principal = signed_in(ctx)?;
    match &principal.key_prefix {
        Some(_) if !principal.has_scope("account") => {
            Err(ApiError::new(Reject::InsufficientScope, "this API key lacks the `account` scope"))
        }
        None if *method != Method::GET && !csrf_ok(headers, csrf_field) => Err(csrf_refused()),
        _ => Ok(principal),
    }
}

/// `GET /auth/csrf`: a CSRF token (also set as a cookie) for HTML forms.
#[utoipa::path(
    get, path = "/auth/csrf", tag = "auth",
    responses((status = 200, description = "A CSRF token, also set as the `palisade_csrf` cookie", body = crate::schema::CsrfToken), crate::schema::E403, crate::schema::E429, crate::schema::E503)
)]
pub async fn csrf(State(auth): State<AuthState>, headers: HeaderMap) -> Response {
    let token = cookie(&headers, CSRF_COOKIE).map(str::to_owned).unwrap_or_else(new_token);
    let mut response = Json(json!({"csrf_token": token})).into_response();
    let value = auth.cookies.set(CSRF_COOKIE, &token, auth.session_ttl(), false);
    response.headers_mut().append(header::SET_COOKIE, value);
    response
}

/// `POST /auth/register`
#[utoipa::path(
    post, path = "/auth/register", tag = "auth",
    request_body = crate::schema::Registration,
    responses(
        (status = 201, description = "The account, unverified; the code went to the phone or address", body = crate::schema::Registered),
        (status = 202, description = "The waiting room holds the sign-up: poll the ticket", body = crate::schema::WaitingTicket),
        crate::schema::E400, crate::schema::E403, crate::schema::E409, crate::schema::E410, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E502, crate::schema::E503,
    )
)]
pub async fn register(
    State(auth): State<AuthState>,
    State(edge): State<Arc<Edge>>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<Registration>,
) -> Result<Response, ApiError> {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return Err(csrf_refused());
    }
    let proof = text_proof(&edge, &ctx, &headers, auth.accounts.config().sms_proof_difficulty).await?;
    match auth.accounts.register(input.value, Some(&ctx.client), proof).await {
        Ok(registered) => Ok((StatusCode::CREATED, Json(registered)).into_response()),
        Err(e) => Err(texts_refusal(&edge, &auth, &ctx, &headers, &e)),
    }
}

/// Whether the request carries a solved proof of work for a text ([`PROOF_HEADER`]); a
/// proof that does not hold is refused rather than ignored, so the client learns why.
async fn text_proof(
    edge: &Edge,
    ctx: &RequestContext,
    headers: &HeaderMap,
    difficulty: u8,
) -> Result<TextProof, ApiError> {
    let Some(proof) = headers.get(PROOF_HEADER) else { return Ok(TextProof::Absent) };
    let proof = proof.to_str().unwrap_or("");
    let binding = edge.binding(&ctx.client, headers);
    match edge.prove(proof, difficulty, &binding, &ctx.client, now()).await {
        Ok(()) => Ok(TextProof::Solved),
        Err(e) => {
            let message =
                format!("the proof of work in {PROOF_HEADER} does not hold: {e} ({}); solve a new challenge", e.code());
            Err(ApiError::new(Reject::ChallengeFailed, message))
        }
    }
}

/// An account refusal as the client gets it; a text that needs a proof of work comes
/// with a challenge of the configured difficulty to solve.
fn texts_refusal(
    edge: &Edge,
    auth: &AuthState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    e: &AccountError,
) -> ApiError {
    let mut error = ApiError::from(e);
    if matches!(e, AccountError::Refused(RegistrationRefused::TextsNeedProof)) {
        let binding = edge.binding(&ctx.client, headers);
        let challenge = edge.challenge_at(&binding, auth.accounts.config().sms_proof_difficulty, now());
        error.challenge = Some(Box::new(challenge));
    }
    error
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct VerifyBody {
    user_id: i64,
    code: String,
}

/// `POST /auth/verify`
#[utoipa::path(
    post, path = "/auth/verify", tag = "auth",
    request_body = VerifyBody,
    responses((status = 200, description = "The account is active", body = crate::schema::Verified),
        crate::schema::E400, crate::schema::E403, crate::schema::E404, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn verify(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    input: Input<VerifyBody>,
) -> Result<Response, ApiError> {
    auth.accounts.verify(input.value.user_id, &input.value.code, Some(&ctx.client)).await?;
    Ok(Json(json!({"user_id": input.value.user_id, "status": "active"})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResendBody {
    user_id: i64,
}

/// `POST /auth/verify/resend`: the same answer for every id, known or not.
#[utoipa::path(
    post, path = "/auth/verify/resend", tag = "auth",
    request_body = ResendBody,
    responses((status = 202, description = "A new code, if the id is an unverified account's", body = crate::schema::Sent),
        crate::schema::E400, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E502, crate::schema::E503)
)]
pub async fn resend(
    State(auth): State<AuthState>,
    State(edge): State<Arc<Edge>>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<ResendBody>,
) -> Result<Response, ApiError> {
    let proof = text_proof(&edge, &ctx, &headers, auth.accounts.config().sms_proof_difficulty).await?;
    match auth.accounts.resend_code(input.value.user_id, Some(&ctx.client), proof).await {
        Ok(()) => Ok((StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response()),
        Err(e) => Err(texts_refusal(&edge, &auth, &ctx, &headers, &e)),
    }
}

/// `POST /auth/login`: on success sets the session and CSRF cookies.
#[utoipa::path(
    post, path = "/auth/login", tag = "auth",
    request_body = crate::schema::Login,
    responses((status = 200, description = "Signed in; sets the `palisade_session` and `palisade_csrf` cookies", body = crate::schema::SignedIn),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn login(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<Login>,
) -> Result<Response, ApiError> {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return Err(csrf_refused());
    }
    let session = auth.accounts.login(input.value, Some(&ctx.client)).await?;
    let csrf = new_token();
    let body = json!({
        "user_id": session.user_id,
        "expires_in_s": session.expires_in.as_secs(),
        "mfa_enrollment_required": session.mfa_enrollment_required,
        "csrf_token": csrf,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, auth.cookies.set(SESSION_COOKIE, &session.token, session.expires_in, true));
    headers.append(header::SET_COOKIE, auth.cookies.set(CSRF_COOKIE, &csrf, session.expires_in, false));
    Ok(response)
}

/// The `csrf_token` field of a form-encoded body, for endpoints with no other input.
fn form_csrf(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if !is_form(headers) || body.len() > MAX_AUTH_BODY {
        return None;
    }
    serde_urlencoded::from_bytes::<CsrfField>(body).ok().and_then(|f| f.csrf_token)
}

/// `POST /auth/logout`
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    responses((status = 204, description = "Signed out; the session cookie is cleared"),
        crate::schema::E401, crate::schema::E403, crate::schema::E429, crate::schema::E503)
)]
pub async fn logout(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let field = form_csrf(&headers, &body);
    let principal = account_holder(&ctx, &headers, &Method::POST, field.as_deref())?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        auth.accounts.logout(token, principal.user_id, Some(&ctx.client)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().append(header::SET_COOKIE, auth.cookies.set(SESSION_COOKIE, "", Duration::ZERO, true));
    Ok(response)
}

/// `GET /auth/me`
#[utoipa::path(
    get, path = "/auth/me", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    responses((status = 200, description = "Who the credential names", body = crate::schema::Me), crate::schema::E401, crate::schema::E403, crate::schema::E429, crate::schema::E503)
)]
pub async fn me(ctx: RequestContext) -> Result<Response, ApiError> {
    let p = signed_in(&ctx)?;
    let body = json!({"user_id": p.user_id, "status": p.status.as_str(), "key": p.key_prefix, "scopes": p.scopes});
    Ok(Json(body).into_response())
}

/// `GET /auth/sessions`
#[utoipa::path(
    get, path = "/auth/sessions", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    responses((status = 200, description = "The account's sessions", body = crate::schema::SessionList), crate::schema::E401, crate::schema::E403, crate::schema::E429, crate::schema::E503)
)]
pub async fn sessions(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::GET, None)?;
    let list = auth.accounts.sessions(principal.user_id, cookie(&headers, SESSION_COOKIE)).await?;
    Ok(Json(json!({"sessions": list})).into_response())
}

/// `DELETE /auth/sessions/{id}`
#[utoipa::path(
    delete, path = "/auth/sessions/{id}", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "A session id from `GET /auth/sessions`")),
    responses((status = 204, description = "The session is over"), crate::schema::E401, crate::schema::E403, crate::schema::E404, crate::schema::E429, crate::schema::E503)
)]
pub async fn revoke_session(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::DELETE, None)?;
    auth.accounts.revoke_session(principal.user_id, &id, Some(&ctx.client)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct NewKeyBody {
    name: String,
    #[serde(default)]
    scopes: String,
    rpm_limit: Option<u32>,
}

/// `POST /auth/keys`: the key is in the answer, once.
#[utoipa::path(
    post, path = "/auth/keys", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    request_body = NewKeyBody,
    responses((status = 201, description = "The key, shown this once", body = crate::schema::NewKey),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn create_key(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<NewKeyBody>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::POST, input.csrf_field.as_deref())?;
    let actor = format!("user:{}", principal.user_id);
    let v = &input.value;
    let (prefix, key) = auth.accounts.create_key(principal.user_id, &v.name, &v.scopes, v.rpm_limit, &actor).await?;
    Ok((StatusCode::CREATED, Json(json!({"prefix": prefix, "key": key}))).into_response())
}

/// `GET /auth/keys`
#[utoipa::path(
    get, path = "/auth/keys", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    responses((status = 200, description = "The account's API keys (never the keys themselves)", body = crate::schema::KeyList),
        crate::schema::E401, crate::schema::E403, crate::schema::E429, crate::schema::E503)
)]
pub async fn list_keys(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::GET, None)?;
    let keys = auth.accounts.keys_of(principal.user_id).await?;
    Ok(Json(json!({"keys": keys})).into_response())
}

/// `DELETE /auth/keys/{prefix}`
#[utoipa::path(
    delete, path = "/auth/keys/{prefix}", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    params(("prefix" = String, Path, description = "The key's prefix")),
    responses((status = 204, description = "The key no longer works"), crate::schema::E401, crate::schema::E403, crate::schema::E404, crate::schema::E429, crate::schema::E503)
)]
pub async fn revoke_key(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    Path(prefix): Path<String>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::DELETE, None)?;
    let actor = format!("user:{}", principal.user_id);
    auth.accounts.revoke_key(&prefix, Some(principal.user_id), &actor).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/mfa/totp` `{password, totp?}`: start enrolment, or the replacement of
/// the factor, after re-authentication.
#[utoipa::path(
    post, path = "/auth/mfa/totp", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    request_body = crate::schema::Reauth,
    responses((status = 200, description = "The secret to enrol, to be confirmed with a code", body = crate::schema::TotpEnrollment),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn start_totp(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<Reauth>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::POST, input.csrf_field.as_deref())?;
    let enrollment = auth.accounts.start_totp(principal.user_id, &input.value, Some(&ctx.client)).await?;
    Ok(Json(enrollment).into_response())
}

/// `DELETE /auth/mfa/totp` `{password, totp}`: remove the second factor.
#[utoipa::path(
    delete, path = "/auth/mfa/totp", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    request_body = crate::schema::Reauth,
    responses((status = 204, description = "TOTP is off; the account's other sessions ended"),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E404, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn remove_totp(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<Reauth>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::DELETE, input.csrf_field.as_deref())?;
    let session = cookie(&headers, SESSION_COOKIE);
    auth.accounts.remove_totp(principal.user_id, &input.value, session, Some(&ctx.client)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/password` `{current_password, new_password, totp?}`.
#[utoipa::path(
    post, path = "/auth/password", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    request_body = crate::schema::PasswordChange,
    responses((status = 204, description = "The password changed; the account's other sessions ended"),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn change_password(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<PasswordChange>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::POST, input.csrf_field.as_deref())?;
    let session = cookie(&headers, SESSION_COOKIE);
    auth.accounts.change_password(principal.user_id, input.value, session, Some(&ctx.client)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/password/reset` `{phone? | email?}`: a code to the verified phone or
/// address, if there is such an account; the answer is the same either way.
#[utoipa::path(
    post, path = "/auth/password/reset", tag = "auth",
    request_body = crate::schema::ResetRequest,
    responses((status = 202, description = "A code, if a verified account has that phone or address", body = crate::schema::Sent),
        crate::schema::E400, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E502, crate::schema::E503)
)]
pub async fn request_password_reset(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<ResetRequest>,
) -> Result<Response, ApiError> {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return Err(csrf_refused());
    }
    auth.accounts.request_password_reset(input.value, Some(&ctx.client)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"sent": true}))).into_response())
}

/// `POST /auth/password/reset/confirm` `{phone? | email?, code, new_password}`.
#[utoipa::path(
    post, path = "/auth/password/reset/confirm", tag = "auth",
    request_body = crate::schema::ResetConfirmation,
    responses((status = 204, description = "The password changed; every session ended"),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn reset_password(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<ResetConfirmation>,
) -> Result<Response, ApiError> {
    if input.form && !csrf_ok(&headers, input.csrf_field.as_deref()) {
        return Err(csrf_refused());
    }
    auth.accounts.reset_password(input.value, Some(&ctx.client)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ConfirmTotpBody {
    enrollment: String,
    code: String,
}

/// `POST /auth/mfa/totp/confirm`: returns the ten recovery codes, once.
#[utoipa::path(
    post, path = "/auth/mfa/totp/confirm", tag = "auth",
    security(("session" = []), ("api_key" = [])),
    request_body = ConfirmTotpBody,
    responses((status = 200, description = "TOTP is on: the recovery codes, shown this once", body = crate::schema::RecoveryCodes),
        crate::schema::E400, crate::schema::E401, crate::schema::E403, crate::schema::E404, crate::schema::E413, crate::schema::E415, crate::schema::E429, crate::schema::E503)
)]
pub async fn confirm_totp(
    State(auth): State<AuthState>,
    ctx: RequestContext,
    headers: HeaderMap,
    input: Input<ConfirmTotpBody>,
) -> Result<Response, ApiError> {
    let principal = account_holder(&ctx, &headers, &Method::POST, input.csrf_field.as_deref())?;
    let v = &input.value;
    let session = cookie(&headers, SESSION_COOKIE);
    let codes =
        auth.accounts.confirm_totp(principal.user_id, &v.enrollment, &v.code, session, Some(&ctx.client)).await?;
    Ok(Json(json!({"enabled": true, "recovery_codes": codes})).into_response())
}

/// Reviews the SMS breaker once a second (see `accounts::service::texts`): audits what
/// was held or released, narrows or reopens registration, and calls `changed` when what
/// is held changed, so the status page says so at once.
pub async fn run_texts_review(accounts: Arc<Accounts>, changed: impl Fn() + Send + 'static) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = None;
    loop {
        tick.tick().await;
        match accounts.review_texts().await {
            Ok(held) if last != Some(held) => {
                last = Some(held);
                changed();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "reviewing the SMS breaker failed"),
        }
    }
}
