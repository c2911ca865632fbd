//! `GET /v1/models`: the model list, from an upstream. It costs the model servers
//! nothing, so it skips the guard, the budget and admission, but not the caller check.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Request, Response};
use axum::response::IntoResponse;

use super::{Proxy, context, upstream_headers};
use crate::error::ApiError;

pub async fn list_models(State(proxy): State<Arc<Proxy>>, request: Request<Body>) -> Response<Body> {
    list(&proxy, request).await.unwrap_or_else(IntoResponse::into_response)
}

async fn list(proxy: &Proxy, request: Request<Body>) -> Result<Response<Body>, ApiError> {
    let (mut parts, _) = request.into_parts();
    let ctx = context(&mut parts)?;
    proxy.caller(&ctx)?;
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let headers = upstream_headers(&parts.headers, &ctx, false);
    proxy.dispatch(http::Method::GET, path, &headers, &Bytes::new(), None, None).await
}
