//! Bearer tokens → principals. Tokens are compared as SHA-256 digests
//! against the agent pool in force (`actors::System::principal_of_token`):
//! the plain token is never kept, and a token rotated away or of an agent
//! deactivated through the admin API stops working at once.

use actors::shared::Principal;
use axum::http::HeaderMap;
use protocol::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

use crate::server::AppState;

/// Who presents `token`: `Ok(None)` when nobody; `Err` while the engine is
/// still starting (the pool in force is read from the store).
pub fn principal(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    let system = state.system().ok_or_else(|| ApiError::unavailable("the engine is still starting; retry shortly"))?;
    Ok(system.principal_of_token(token))
}

/// The principal of `Authorization: Bearer …` or, for browsers, `?token=`.
pub fn authenticate(state: &AppState, headers: &HeaderMap, query_token: Option<&str>) -> Result<Principal, ApiError> {
    let token = bearer(headers).or(query_token).ok_or_else(|| {
        ApiError::new(ErrorCode::Unauthorized, "send `Authorization: Bearer <token>` (or `?token=` from a browser)")
    })?;
    principal(state, token)?.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "that token is not valid"))
}

/// Compares a presented secret with the configured one in constant time:
/// both are hashed first, so neither the content nor the length leaks
/// through timing.
pub fn same_secret(expected: &str, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.as_bytes());
    bool::from(expected.as_slice().ct_eq(presented.as_slice()))
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}
