//! The OpenAPI 3.1 document served at `GET /openapi.json`: the public API (`/v1`,
//! `/auth`, `/challenge`, `/api/v2`), gathered from the handlers' `#[utoipa::path]`
//! annotations and the bodies in `schema.rs`, and the operators' API (`/admin`, on the
//! admin listener), rendered once when the router is built.

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use utoipa::openapi::schema::{AdditionalProperties, Schema};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi};

use crate::schema::{self, E400, E401, E403, E404, E405, E408, E413, E429, E502, E503, E504};
use crate::{auth, edge, proxy};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Palisade",
        description = "A gateway in front of OpenAI-compatible model servers. Every refusal has the shape of \
                       `#/components/schemas/Error`; a browser asking for HTML gets a page instead."
    ),
    paths(
        proxy::forward,
        completions,
        embeddings,
        proxy::models::list_models,
        auth::csrf,
        auth::register,
        auth::verify,
        auth::resend,
        auth::login,
        auth::logout,
        auth::me,
        auth::sessions,
        auth::revoke_session,
        auth::list_keys,
        auth::create_key,
        auth::revoke_key,
        auth::start_totp,
        auth::remove_totp,
        auth::confirm_totp,
        auth::change_password,
        auth::request_password_reset,
        auth::reset_password,
        edge::waiting::poll,
        edge::challenge::get,
        edge::challenge::post,
        summary,
        status,
        components,
        incidents,
        unresolved_incidents,
        scheduled_maintenances,
        upcoming_maintenances,
        active_maintenances,
        openapi_json,
        admin_login,
        admin_enroll,
        admin_whoami,
        admin_logout,
        admin_operators,
        admin_add_operator,
        admin_disable_operator,
        admin_operator_role,
        admin_reset_operator,
        admin_get_registration,
        admin_set_registration,
        admin_invite,
        admin_mfa_reset,
        admin_mfa_required,
        admin_pin_tier,
        admin_lift_tier,
        admin_clear_cohort,
        admin_audit,
        admin_flags,
        admin_clear_flag,
        admin_incidents,
        admin_open_incident,
        admin_update_incident,
        admin_resolve_incident,
        admin_set_component,
        admin_maintenance,
        admin_list_rules,
        admin_add_rule,
        admin_remove_rule,
        admin_get_attack,
        admin_set_attack,
    ),
    components(schemas(schema::ErrorBody)),
    modifiers(&Finish)
)]
struct PublicApi;

/// What the derive cannot say: the version, the credentials, and that the proxied
/// API's bodies are open.
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut Document) {
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(what)).build())
        };
        components.add_security_scheme("api_key", bearer("An API key (`Authorization: Bearer sk-…`)"));
        components.add_security_scheme(
            "operator",
            bearer("An operator token from `POST /admin/login` (`pop_…`), or the bootstrap secret"),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::cookies::SESSION_COOKIE))),
        );
        for name in schema::OPEN_OBJECTS {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(true)));
            }
        }
    }
}

/// The document as served.
pub fn document() -> Bytes {
    let json = PublicApi::openapi().to_json().expect("the OpenAPI document serializes");
    Bytes::from(json)
}

/// `GET /openapi.json`: the bytes rendered at start.
pub fn serve(document: Bytes) -> Response {
    let mut response = Response::new(Body::from(document));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /openapi.json` as the document lists itself.
#[utoipa::path(
    get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object))
)]
#[allow(dead_code)]
fn openapi_json() {}

// One handler serves these paths (`proxy::forward`, `status_page::api`); a utoipa path
// is one function, so each further path is described by a function that only describes.

#[utoipa::path(
    post, path = "/v1/completions", tag = "inference",
    security(("api_key" = []), ("session" = []), ()),
    request_body = schema::CompletionRequest,
    responses(
        (status = 200, description = "The model server's answer; with `stream: true`, server-sent events",
            content((schema::ModelReply = "application/json"), (schema::StreamEvent = "text/event-stream"))),
        E400, E401, E403, E404, E405, E408, E413, E429, E502, E503, E504,
    )
)]
#[allow(dead_code)]
fn completions() {}

#[utoipa::path(
    post, path = "/v1/embeddings", tag = "inference",
    security(("api_key" = []), ("session" = []), ()),
    request_body = schema::EmbeddingRequest,
    responses(
        (status = 200, description = "The model server's answer", body = schema::ModelReply),
        E400, E401, E403, E404, E405, E408, E413, E429, E502, E503, E504,
    )
)]
#[allow(dead_code)]
fn embeddings() {}

macro_rules! statuspage {
    ($($name:ident = $path:literal, $body:ty;)*) => {$(
        #[utoipa::path(
            get, path = $path, tag = "status",
            responses(
                (status = 200, description = "The Statuspage v2 document, field for field", body = $body),
                E429,
                (status = 503, description = "The status page is starting (`Retry-After: 1`)", body = String,
                    content_type = "text/plain"),
            )
        )]
        #[allow(dead_code)]
        fn $name() {}
    )*};
}

statuspage! {
    summary = "/api/v2/summary.json", schema::SummaryDoc;
    status = "/api/v2/status.json", schema::StatusDoc;
    components = "/api/v2/components.json", schema::ComponentsDoc;
    incidents = "/api/v2/incidents.json", schema::IncidentsDoc;
    unresolved_incidents = "/api/v2/incidents/unresolved.json", schema::IncidentsDoc;
    scheduled_maintenances = "/api/v2/scheduled-maintenances.json", schema::MaintenancesDoc;
    upcoming_maintenances = "/api/v2/scheduled-maintenances/upcoming.json", schema::MaintenancesDoc;
    active_maintenances = "/api/v2/scheduled-maintenances/active.json", schema::MaintenancesDoc;
}

// The operators' API, served only on the admin listener (`admin.listen`). Reads need
// the viewer role, operator management the admin role, other changes the operator role
// (403 `admin_forbidden` otherwise). Bodies are the operator's JSON, described loosely.
macro_rules! admin {
    ($($name:ident: $method:ident $path:literal
        $(params($($param:tt)*))? $(body($req:ty))?
        => $ok:literal $(json($json:literal))? $(empty($empty:literal))?;)*) => {$(
        #[utoipa::path(
            $method, path = $path, tag = "admin",
            $(params($($param)*),)?
            $(request_body = $req,)?
            security(("operator" = [])),
            responses(
                $((status = $ok, description = $json, body = Object),)?
                $((status = $ok, description = $empty),)?
                E400, E401, schema::E403, E404, E405, E413, E429, E503,
            )
        )]
        #[allow(dead_code)]
        fn $name() {}
    )*};
}

/// The two ways in need no token; failures count per operator name (429 when guessed).
#[utoipa::path(
    post, path = "/admin/login", tag = "admin",
    request_body = Object,
    responses(
        (status = 200, description = "A short-lived operator token (`pop_…`)", body = Object),
        E400, E401, E404, E405, E413, E429, E503,
    )
)]
#[allow(dead_code)]
fn admin_login() {}

#[utoipa::path(
    post, path = "/admin/operators/enroll", tag = "admin",
    request_body = Object,
    responses(
        (status = 201, description = "The TOTP secret and its otpauth:// URI, once", body = Object),
        E400, E404, E405, E413, E429, E503,
    )
)]
#[allow(dead_code)]
fn admin_enroll() {}

admin! {
    admin_whoami: get "/admin/whoami" => 200 json("The token's operator and role");
    admin_logout: post "/admin/logout" => 204 empty("The token ended");
    admin_operators: get "/admin/operators" => 200 json("Every operator, with role and state");
    admin_add_operator: post "/admin/operators" body(Object) => 201 json("The new operator's one-time setup code");
    admin_disable_operator: delete "/admin/operators/{name}" params(("name" = String, Path)) => 204 empty("Disabled; their tokens end");
    admin_operator_role: put "/admin/operators/{name}/role" params(("name" = String, Path)) body(Object) => 204 empty("The role changed");
    admin_reset_operator: post "/admin/operators/{name}/reset" params(("name" = String, Path)) => 200 json("A new setup code");
    admin_get_registration: get "/admin/registration" => 200 json("The registration policy");
    admin_set_registration: put "/admin/registration" body(Object) => 200 json("The policy now in force");
    admin_invite: post "/admin/invites" => 201 json("An invite code");
    admin_mfa_reset: post "/admin/users/{id}/mfa/reset" params(("id" = i64, Path)) => 204 empty("The second factor removed");
    admin_mfa_required: put "/admin/users/{id}/mfa/required" params(("id" = i64, Path)) body(Object) => 204 empty("Set");
    admin_pin_tier: put "/admin/users/{id}/tier" params(("id" = i64, Path)) body(Object) => 204 empty("Pinned");
    admin_lift_tier: delete "/admin/users/{id}/tier" params(("id" = i64, Path)) => 204 empty("The pin lifted");
    admin_clear_cohort: delete "/admin/users/{id}/cohort" params(("id" = i64, Path)) => 204 empty("The cohort flag cleared");
    admin_audit: get "/admin/audit" params(("limit" = Option<i64>, Query), ("action" = Option<String>, Query)) => 200 json("Recent audit entries, newest first");
    admin_flags: get "/admin/flags" => 200 json("Callers with strikes, and flagged accounts");
    admin_clear_flag: delete "/admin/flags/{caller}" params(("caller" = u64, Path)) => 204 empty("The strikes cleared");
    admin_incidents: get "/admin/incidents" => 200 json("Unresolved and recent incidents");
    admin_open_incident: post "/admin/incidents" body(Object) => 201 json("The incident, on the page");
    admin_update_incident: post "/admin/incidents/{id}/updates" params(("id" = i64, Path)) body(Object) => 200 json("The incident with its new update");
    admin_resolve_incident: post "/admin/incidents/{id}/resolve" params(("id" = i64, Path)) body(Object) => 200 json("The incident, resolved");
    admin_set_component: put "/admin/components/{id}" params(("id" = String, Path)) body(Object) => 200 json("The override now in force");
    admin_maintenance: post "/admin/maintenances" body(Object) => 201 json("The maintenance, announced");
    admin_list_rules: get "/admin/blocklist" => 200 json("Block and allow list entries");
    admin_add_rule: post "/admin/blocklist" body(Object) => 201 json("The entry");
    admin_remove_rule: delete "/admin/blocklist" body(Object) => 204 empty("The entry removed");
    admin_get_attack: get "/admin/attack-mode" => 200 json("Attack mode, its switch and the detector's rates");
    admin_set_attack: put "/admin/attack-mode" body(Object) => 200 json("Attack mode after the switch");
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    found.push(r);
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn a_3_1_document_whose_every_reference_resolves() {
        let doc: Value = serde_json::from_slice(&super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
        let mut found = Vec::new();
        references(&doc, &mut found);
        assert!(found.contains(&"#/components/schemas/Error"));
        for r in found {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}"));
            assert!(doc["components"]["schemas"][name].is_object(), "{r} is not in the document");
        }
        let chat = &doc["components"]["schemas"]["ChatCompletionRequest"];
        assert_eq!(chat["additionalProperties"], true, "{chat}");
    }
}
