//! `GET /v1/models`: the model list, from an upstream. It costs the model servers
//! nothing, so it skips the guard, the budget and admission, but not the caller check.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response};
use axum::response::IntoResponse;

use super::{Proxy, UpstreamHeaders, context, target_path};
use crate::error::ApiError;
use crate::request::RequestContext;

/// `GET /v1/models`
#[utoipa::path(
    get, path = "/v1/models", tag = "inference",
    security(("api_key" = []), ("session" = []), ()),
    responses(
        (status = 200, description = "The models the model servers serve", body = crate::schema::ModelList),
        crate::schema::E401, crate::schema::E403, crate::schema::E405, crate::schema::E429, crate::schema::E502, crate::schema::E503, crate::schema::E504,
    )
)]
pub async fn list_models(State(proxy): State<Arc<Proxy>>, request: Request<Body>) -> Response<Body> {
    match context(request) {
        Ok((ctx, request)) => list_in(&proxy, ctx, request).await,
        Err(e) => e.into_response(),
    }
}

/// [`list_models`] for the listener's direct path, which hands over the context itself.
pub async fn list_in(proxy: &Proxy, ctx: RequestContext, request: Request<Body>) -> Response<Body> {
    list(proxy, ctx, request).await.unwrap_or_else(IntoResponse::into_response)
}

async fn list(proxy: &Proxy, ctx: RequestContext, request: Request<Body>) -> Result<Response<Body>, ApiError> {
    let (parts, _) = request.into_parts();
    proxy.caller(&ctx, std::time::Instant::now())?;
    let path = target_path(&parts.uri);
    let headers = UpstreamHeaders { client: &parts.headers, ctx: &ctx, json: false };
    proxy.dispatch(http::Method::GET, &path, &headers, &Bytes::new(), None, None).await
}
