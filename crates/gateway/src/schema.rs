//! The HTTP API's bodies as OpenAPI schemas, and the refusals each path can answer,
//! for the document at `/openapi.json` (see `openapi.rs`).
//!
//! Bodies the gateway's own handlers read derive [`ToSchema`] where they are defined.
//! The ones that belong to the account service, the status crate or the proxied
//! OpenAI API are described here instead, as types that exist only to be described:
//! a schema dependency in every crate would cost more than these few mirrors, and
//! schemathesis holds them to what the server really answers.
//!
//! Every refusal has one shape, [`ErrorBody`], described once; a path lists the status
//! codes it can refuse with as the marker types at the bottom ([`E400`] …), each of
//! which names the `code`s that status carries.

// Fields here are read by the schema derive, never by code.
#![allow(dead_code)]

use std::collections::BTreeMap;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{IntoResponses, ToSchema};

use crate::error::Reject;

/// Every refusal: OpenAI's error shape. A refusal that needs a proof of work first
/// (`challenge_required`) also carries the `challenge` to solve.
#[derive(ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    error: ErrorDetail,
    challenge: Option<Challenge>,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// For people: what went wrong and what to do.
    message: String,
    /// OpenAI's error type.
    #[schema(rename = "type")]
    kind: ErrorType,
    /// The request field at fault, if one is.
    param: Option<String>,
    /// Stable across releases: what programs match on.
    code: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    PermissionError,
    RateLimitError,
    ServerError,
}

/// A proof-of-work challenge: find a `nonce` such that SHA-256 of the seed and the
/// nonce has `difficulty` leading zero bits, then `POST /challenge`.
#[derive(ToSchema)]
pub struct Challenge {
    token: String,
    seed: String,
    difficulty: u8,
    /// Unix seconds.
    expires_at: u64,
    algorithm: String,
    /// Where to send the answer (`/challenge`).
    submit: String,
}

/// `POST /challenge`: a solved challenge.
#[derive(ToSchema)]
pub struct ChallengeAnswer {
    token: String,
    /// The nonce found, as a string or a whole number.
    nonce: serde_json::Value,
}

/// A clearance: send it as the cookie or header named here (it is also set as that cookie).
#[derive(ToSchema)]
pub struct Clearance {
    clearance: String,
    expires_in_s: u64,
    /// How many requests the clearance is good for.
    budget: u32,
    cookie: String,
    header: String,
}

/// A sign-up the waiting room holds: poll `poll` with the ticket.
#[derive(ToSchema)]
pub struct WaitingTicket {
    /// `waiting`
    status: String,
    ticket: String,
    position: u64,
    eta_s: Option<u64>,
    poll_after_s: u64,
    poll: String,
}

/// A waiting-room ticket's standing: still `waiting` (with its position), or `admitted`
/// with the pass to send as the named header when registering again.
#[derive(ToSchema)]
pub struct TicketStatus {
    status: TicketState,
    position: Option<u64>,
    eta_s: Option<u64>,
    poll_after_s: Option<u64>,
    pass: Option<String>,
    header: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TicketState {
    Waiting,
    Admitted,
}

// The account service's bodies (`accounts::service`).

/// A new account: a phone number or an e-mail address, and a password.
#[derive(ToSchema)]
pub struct Registration {
    phone: Option<String>,
    email: Option<String>,
    password: String,
    invite: Option<String>,
}

#[derive(ToSchema)]
pub struct Registered {
    user_id: i64,
    /// `unverified` until the code is confirmed.
    status: String,
    verification_channel: Channel,
    code_expires_in_s: u64,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Email,
}

#[derive(ToSchema)]
pub struct Verified {
    user_id: i64,
    /// `active`
    status: String,
}

/// A code was sent, or would have been: the answer is the same for every id or address.
#[derive(ToSchema)]
pub struct Sent {
    sent: bool,
}

#[derive(ToSchema)]
pub struct Login {
    phone: Option<String>,
    email: Option<String>,
    password: String,
    totp: Option<String>,
    recovery_code: Option<String>,
}

/// Signed in: the session is in the `palisade_session` cookie; `csrf_token` (also the
/// `palisade_csrf` cookie) goes in `x-csrf-token` on state-changing requests.
#[derive(ToSchema)]
pub struct SignedIn {
    user_id: i64,
    expires_in_s: u64,
    mfa_enrollment_required: bool,
    csrf_token: String,
}

#[derive(ToSchema)]
pub struct CsrfToken {
    csrf_token: String,
}

#[derive(ToSchema)]
pub struct Me {
    user_id: i64,
    status: String,
    /// The API key's prefix, when the request came with one.
    key: Option<String>,
    scopes: Vec<String>,
}

#[derive(ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionListing>,
}

#[derive(ToSchema)]
pub struct SessionListing {
    id: String,
    created_at: i64,
    expires_at: i64,
    current: bool,
}

#[derive(ToSchema)]
pub struct KeyList {
    keys: Vec<KeyListing>,
}

#[derive(ToSchema)]
pub struct KeyListing {
    prefix: String,
    name: String,
    scopes: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// The new key, shown this once.
#[derive(ToSchema)]
pub struct NewKey {
    prefix: String,
    key: String,
}

/// Re-authentication for a change to the account's factors.
#[derive(ToSchema)]
pub struct Reauth {
    password: String,
    totp: Option<String>,
}

#[derive(ToSchema)]
pub struct TotpEnrollment {
    secret: String,
    otpauth_uri: String,
    /// Send back with a code to `POST /auth/mfa/totp/confirm`.
    enrollment: String,
}

#[derive(ToSchema)]
pub struct RecoveryCodes {
    enabled: bool,
    /// Ten one-time codes, shown this once.
    recovery_codes: Vec<String>,
}

#[derive(ToSchema)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
    totp: Option<String>,
}

#[derive(ToSchema)]
pub struct ResetRequest {
    phone: Option<String>,
    email: Option<String>,
}

#[derive(ToSchema)]
pub struct ResetConfirmation {
    phone: Option<String>,
    email: Option<String>,
    code: String,
    new_password: String,
}

// The Statuspage v2 documents (`status::v2`), field for field as Statuspage writes them;
// only what a client needs to find its way is spelled out.

#[derive(ToSchema)]
pub struct StatusPage {
    id: String,
    name: String,
    url: String,
    time_zone: String,
    updated_at: String,
}

#[derive(ToSchema)]
pub struct OverallStatus {
    indicator: Indicator,
    description: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Indicator {
    None,
    Maintenance,
    Minor,
    Major,
    Critical,
}

#[derive(ToSchema)]
pub struct StatusComponent {
    id: String,
    name: String,
    /// `operational`, `degraded_performance`, `partial_outage`, `major_outage` or `under_maintenance`.
    status: String,
}

#[derive(ToSchema)]
pub struct StatusIncident {
    id: String,
    name: String,
    status: String,
    impact: String,
}

#[derive(ToSchema)]
pub struct SummaryDoc {
    page: StatusPage,
    components: Vec<StatusComponent>,
    incidents: Vec<StatusIncident>,
    scheduled_maintenances: Vec<StatusIncident>,
    status: OverallStatus,
}

#[derive(ToSchema)]
pub struct StatusDoc {
    page: StatusPage,
    status: OverallStatus,
}

#[derive(ToSchema)]
pub struct ComponentsDoc {
    page: StatusPage,
    components: Vec<StatusComponent>,
}

#[derive(ToSchema)]
pub struct IncidentsDoc {
    page: StatusPage,
    incidents: Vec<StatusIncident>,
}

#[derive(ToSchema)]
pub struct MaintenancesDoc {
    page: StatusPage,
    scheduled_maintenances: Vec<StatusIncident>,
}

// The proxied OpenAI API: the fields the gateway reads; everything else goes to the
// model server as sent (the schemas allow any other property).

#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    model: String,
    messages: Vec<ChatMessage>,
    stream: Option<bool>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stream_options: Option<serde_json::Value>,
}

#[derive(ToSchema)]
pub struct ChatMessage {
    role: String,
    content: serde_json::Value,
}

#[derive(ToSchema)]
pub struct CompletionRequest {
    model: String,
    prompt: serde_json::Value,
    stream: Option<bool>,
    max_tokens: Option<u32>,
}

#[derive(ToSchema)]
pub struct EmbeddingRequest {
    model: String,
    input: serde_json::Value,
}

/// The model server's answer, as it sent it (an OpenAI-compatible object).
#[derive(ToSchema)]
pub struct ModelReply {
    object: Option<String>,
}

/// One server-sent event of a streamed reply: `data` is a chunk object as JSON text,
/// or `[DONE]` at the end.
#[derive(ToSchema)]
pub struct StreamEvent {
    data: String,
    event: Option<String>,
    id: Option<String>,
}

/// The model servers' models, as they list them.
#[derive(ToSchema)]
pub struct ModelList {
    object: Option<String>,
    data: Vec<serde_json::Value>,
}

/// The proxied API's schemas, which say so: any property they do not name is passed on.
pub const OPEN_OBJECTS: [&str; 6] =
    ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "EmbeddingRequest", "ModelReply", "ModelList"];

/// The refusal response for `status`, naming the codes it carries.
fn refusal(status: u16, extra: &str) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let codes: Vec<String> =
        Reject::ALL.iter().filter(|r| r.status().as_u16() == status).map(|r| format!("`{}`", r.code())).collect();
    let mut description = format!("Refused; `error.code` is one of {}", codes.join(", "));
    if !extra.is_empty() {
        description.push_str(". ");
        description.push_str(extra);
    }
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build());
    if matches!(status, 429 | 502 | 503) {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        let retry = HeaderBuilder::new().schema(seconds).description(Some("Seconds after which a retry may succeed"));
        response = response.header("Retry-After", retry.build());
    }
    BTreeMap::from([(status.to_string(), RefOr::T(response.build()))])
}

macro_rules! refusals {
    ($($(#[$doc:meta])* $name:ident = $status:literal, $extra:literal;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                refusal($status, $extra)
            }
        }
    )*};
}

refusals! {
    E400 = 400, "A finer `code` may name the rule a field broke (for a password, say)";
    E401 = 401, "";
    /// On every path behind the edge: `blocked` (block list, bot score) and
    /// `challenge_required` (with `challenge`).
    E403 = 403, "Behind the edge: `blocked`, or `challenge_required` with the `challenge` to solve";
    E404 = 404, "";
    E405 = 405, "";
    E408 = 408, "";
    E409 = 409, "";
    E410 = 410, "";
    E413 = 413, "";
    E415 = 415, "";
    /// On every path behind the edge and on the status API: over a rate limit.
    E429 = 429, "With `Retry-After` and, from the edge, the `RateLimit-*` headers of the limit that refused";
    E500 = 500, "";
    E502 = 502, "";
    E503 = 503, "";
    E504 = 504, "";
}
