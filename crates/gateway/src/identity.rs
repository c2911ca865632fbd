//! Who sent a request: an API key in `Authorization: Bearer`, else a session cookie,
//! else nobody. Looked up once per request (by the edge) and carried in the request's
//! context as an [`Identity`]; known credentials are answered from memory by the
//! account service's cache, so a flood of one bad key costs one lookup each.

use accounts::service::Accounts;
use axum::http::{HeaderMap, HeaderValue, header};

use crate::cookies::{SESSION_COOKIE, cookie};
use crate::request::{Identity, IdentityError};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    bearer_of(headers.get(header::AUTHORIZATION)?)
}

fn bearer_of(authorization: &HeaderValue) -> Option<&str> {
    authorization.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// The request's identity when this node's credential cache already knows its
/// credential (no lookup, no wait); `None` when it would take a lookup.
pub fn cached(accounts: &Accounts, headers: &HeaderMap) -> Option<Identity> {
    let found = if let Some(key) = bearer(headers) {
        accounts.cached_principal(true, key)?
    } else if let Some(token) = cookie(headers, SESSION_COOKIE) {
        accounts.cached_principal(false, token)?
    } else {
        return None;
    };
    Some(found.map_or(Identity::Refused(IdentityError::Invalid), Identity::Known))
}

/// Look the request's credential up; anonymous, without a lookup, when it presents none.
pub async fn resolve(accounts: &Accounts, headers: &HeaderMap) -> Identity {
    // The header map is searched once for each header, however the request is named.
    let authorization = headers.get(header::AUTHORIZATION);
    let found = if let Some(key) = authorization.and_then(bearer_of) {
        accounts.key_principal(key).await
    } else if let Some(token) = cookie(headers, SESSION_COOKIE) {
        accounts.session_principal(token).await
    } else if authorization.is_some() {
        // Some other scheme: nothing Palisade issues.
        Ok(None)
    } else {
        return Identity::Anonymous;
    };
    match found {
        Ok(Some(principal)) => Identity::Known(principal),
        Ok(None) => Identity::Refused(IdentityError::Invalid),
        Err(e) => {
            tracing::warn!(error = %e, "credentials could not be checked");
            Identity::Refused(IdentityError::Unavailable)
        }
    }
}
