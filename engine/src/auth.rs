//! Bearer tokens → principals. Tokens are compared as SHA-256 digests, so the
//! plain token is never kept once the configuration is read.

use std::collections::HashMap;

use actors::settings::AgentSpec;
use actors::shared::Principal;
use axum::http::HeaderMap;
use protocol::{ApiError, ErrorCode};
use sha2::{Digest, Sha256};

pub struct Tokens {
    by_hash: HashMap<String, Principal>,
}

impl Tokens {
    pub fn from_agents(agents: &[AgentSpec]) -> Tokens {
        let by_hash = agents
            .iter()
            .filter_map(|agent| {
                let hash = agent.token_hash()?;
                Some((hash, Principal { agent_id: agent.id.clone(), role: agent.role }))
            })
            .collect();
        Tokens { by_hash }
    }

    pub fn principal(&self, token: &str) -> Option<Principal> {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        self.by_hash.get(&hash).cloned()
    }

    /// The principal of `Authorization: Bearer …` or, for browsers, `?token=`.
    pub fn authenticate(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Principal, ApiError> {
        let token = bearer(headers).or(query_token).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "send `Authorization: Bearer <token>` (or `?token=` from a browser)")
        })?;
        self.principal(token).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "that token is not valid"))
    }
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
