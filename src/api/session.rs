//! Browser sessions for the dashboard: the admin token, given once to `POST /api/v1/session`,
//! becomes an `HttpOnly` cookie, so the token itself is never kept by the page (not in its
//! URL, not in local storage).
//!
//! A session is a sealed cookie, not a database row: its expiry, its CSRF token and a
//! fingerprint of the admin token are sealed with the data folder's secret key (XChaCha20-
//! Poly1305, the key that seals HMAC secrets), so any node sharing that key accepts it and a
//! forged or altered cookie opens on none. Changing the admin token ends every session. Signing
//! out clears the cookie and marks the session revoked in the store until it would expire; every
//! node looks the mark up at most every [`RECHECK`] per session, so a sign-out holds everywhere
//! within that time (at once on the node that served it).
//!
//! CSRF: the cookie is `SameSite=Strict`, and besides, every call authorised by the cookie
//! alone that is not a read (`GET`/`HEAD`) must carry the session's CSRF token in
//! `X-CSRF-Token`. The page reads that token from `GET /api/v1/session` — a same-origin read no
//! other site can make.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::sign_in_guard::ClientAddr;
use super::{ApiError, AppState, ErrorBody, JsonBody};
use crate::auth::secrets::{SealContext, SecretBox};
use crate::store::{Store, StoreError};
use crate::util::{now_ms, random_token, rfc3339, secret_matches, sha256_hex};

/// The session cookie's name.
pub const COOKIE: &str = "wharf_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts from sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a node trusts its last look at the store's sign-out marks for a session.
pub const RECHECK: Duration = Duration::from_secs(2);

/// What a session cookie holds, sealed.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// Expiry, ms since the epoch.
    exp: i64,
    /// The CSRF token (random, 256 bits).
    csrf: String,
    /// The first 16 hex digits of the admin token's hash: a new token ends old sessions.
    tok: String,
}

/// An open, valid session.
pub struct Session {
    /// Its CSRF token.
    pub csrf: String,
    /// Its expiry, ms since the epoch.
    pub expires_at: i64,
}

/// Issues and checks sessions. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    secrets: SecretBox,
    token_hash: String,
    /// Mark cookies `Secure`: the public URL is https.
    secure: bool,
    /// Where sign-outs are kept for every node.
    store: Arc<dyn Store>,
    /// Sessions known to be signed out (by id hash), until they would have expired anyway.
    revoked: Arc<moka::sync::Cache<String, ()>>,
    /// Sessions found not signed out in the store within the last [`RECHECK`].
    checked: Arc<moka::sync::Cache<String, ()>>,
}

impl Sessions {
    /// Sessions sealed with `secrets` for the admin token whose sha256 hex is `token_hash`, their
    /// sign-outs kept in `store`.
    pub fn new(
        secrets: SecretBox,
        token_hash: &str,
        public_url: &str,
        store: Arc<dyn Store>,
    ) -> Self {
        let cache = |ttl| {
            Arc::new(
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(ttl)
                    .build(),
            )
        };
        Sessions {
            secrets,
            token_hash: token_hash.to_owned(),
            secure: public_url.starts_with("https://"),
            store,
            revoked: cache(LIFETIME),
            checked: cache(RECHECK),
        }
    }

    fn fingerprint(&self) -> &str {
        &self.token_hash[..16.min(self.token_hash.len())]
    }

    /// A new session: its cookie value and the session.
    fn issue(&self) -> (String, Session) {
        let claims = Claims {
            exp: now_ms() + LIFETIME.as_millis() as i64,
            csrf: random_token("", 43),
            tok: self.fingerprint().to_owned(),
        };
        let sealed = self.secrets.seal(
            &SealContext::session_cookie(),
            &serde_json::to_vec(&claims).unwrap_or_default(),
        );
        let session = Session {
            csrf: claims.csrf,
            expires_at: claims.exp,
        };
        (sealed, session)
    }

    /// The session a request's cookie holds, if it opens, is unexpired and belongs to the
    /// current admin token (whether it was signed out is not looked at here).
    fn unsealed(&self, headers: &HeaderMap) -> Option<Session> {
        let value = cookie(headers, COOKIE)?;
        let claims: Claims = serde_json::from_slice(
            &self
                .secrets
                .open(&SealContext::session_cookie(), value)
                .ok()?,
        )
        .ok()?;
        let valid = claims.exp > now_ms()
            && bool::from(claims.tok.as_bytes().ct_eq(self.fingerprint().as_bytes()));
        valid.then_some(Session {
            csrf: claims.csrf,
            expires_at: claims.exp,
        })
    }

    /// The session a request's cookie opens, if it is valid now and not signed out.
    pub async fn open(&self, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
        let Some(session) = self.unsealed(headers) else {
            return Ok(None);
        };
        // The store keeps a hash of the session's id, never the id itself (it is the CSRF token).
        let id = sha256_hex(session.csrf.as_bytes());
        if self.revoked.contains_key(&id) {
            return Ok(None);
        }
        if !self.checked.contains_key(&id) {
            if self.store.session_revoked(&id).await? {
                self.revoked.insert(id, ());
                return Ok(None);
            }
            self.checked.insert(id, ());
        }
        Ok(Some(session))
    }

    /// Signs a session out on every node.
    async fn revoke(&self, session: &Session) -> Result<(), StoreError> {
        let id = sha256_hex(session.csrf.as_bytes());
        self.revoked.insert(id.clone(), ());
        self.checked.invalidate(&id);
        self.store.revoke_session(&id, session.expires_at).await
    }

    /// Whether `headers` carry this session's CSRF token.
    pub fn csrf_matches(session: &Session, headers: &HeaderMap) -> bool {
        headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes().ct_eq(session.csrf.as_bytes()).into())
            .unwrap_or(false)
    }

    fn set_cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        // Sealed values are base64 text: no character needs quoting in a cookie.
        HeaderValue::from_str(&format!(
            "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("wharf_session=; Path=/; Max-Age=0"))
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The sign-in route, outside the admin check: it takes the token rather than needing it.
pub(super) fn open_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in))
}

/// Session routes behind the admin check.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(session_info, sign_out))
}

/// The admin token, to sign in with.
#[derive(Deserialize, ToSchema)]
pub(super) struct SignIn {
    /// The admin token.
    #[serde(default)]
    token: String,
}

/// A session as the page sees it.
#[derive(Serialize, ToSchema)]
pub(super) struct SessionInfo {
    /// Send this in `X-CSRF-Token` with every call that changes something.
    csrf_token: String,
    /// When the session ends.
    expires_at: String,
}

impl From<Session> for SessionInfo {
    fn from(s: Session) -> Self {
        SessionInfo {
            csrf_token: s.csrf,
            expires_at: rfc3339(s.expires_at),
        }
    }
}

/// Signs in with the admin token: sets the `HttpOnly`, `SameSite=Strict` session cookie
/// (`Secure` when the public URL is https) and answers the session's CSRF token. The token is
/// taken from the body only, never from the URL.
#[utoipa::path(post, path = "/session", tag = "ops", request_body = SignIn,
    security(()),
    responses((status = 200, body = SessionInfo),
        (status = 400, description = "The body is not `{\"token\": \"…\"}`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 408, description = "Body not received within `--body-timeout-seconds`", body = ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins from this address; see `Retry-After`", body = ErrorBody)))]
async fn sign_in(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(body): JsonBody<SignIn>,
) -> Response {
    let token = body.token.trim();
    if token.is_empty() {
        return ApiError::Unauthorized("missing admin token: send {\"token\": \"…\"}".into())
            .into_response();
    }
    // Before the token is compared: a blocked address learns nothing from its guesses.
    if let Err(refused) = s.settings.sign_ins.check(client) {
        return refused.into_response();
    }
    if !secret_matches(token, &s.settings.admin_token_hash) {
        s.settings.sign_ins.failed(client, "POST /api/v1/session");
        return ApiError::Unauthorized("wrong admin token".into()).into_response();
    }
    let sessions = &s.settings.sessions;
    let (value, session) = sessions.issue();
    let cookie = sessions.set_cookie(&value, LIFETIME.as_secs());
    (
        StatusCode::OK,
        [(header::SET_COOKIE, cookie)],
        Json(SessionInfo::from(session)),
    )
        .into_response()
}

/// The current session's CSRF token and expiry (`401` without a valid session cookie).
#[utoipa::path(get, path = "/session", tag = "ops",
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn session_info(State(s): State<AppState>, headers: HeaderMap) -> Response {
    match s.settings.sessions.open(&headers).await {
        Ok(Some(session)) => Json(SessionInfo::from(session)).into_response(),
        Ok(None) => ApiError::Unauthorized("no session: sign in with POST /api/v1/session".into())
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Signs out: clears the cookie and revokes the session, on every node, until it would expire.
#[utoipa::path(delete, path = "/session", tag = "ops",
    responses((status = 204, description = "Signed out"), (status = 401, body = ErrorBody)))]
async fn sign_out(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let sessions = &s.settings.sessions;
    if let Some(session) = sessions.unsealed(&headers)
        && let Err(e) = sessions.revoke(&session).await
    {
        return ApiError::from(e).into_response();
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, sessions.set_cookie("", 0))],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sessions(hash: &str, dir: &tempfile::TempDir) -> Sessions {
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("wharf.db"))
            .await
            .unwrap();
        Sessions::new(
            SecretBox::from_base64(&key).unwrap(),
            hash,
            "http://localhost",
            Arc::new(store),
        )
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn a_session_opens_until_revoked_and_only_for_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(&"ab".repeat(32), &dir).await;
        let (value, issued) = s.issue();
        let open = s.open(&with_cookie(&value)).await.unwrap().expect("opens");
        assert_eq!(open.csrf, issued.csrf);
        // Another admin token's sessions do not open, nor do altered cookies.
        let other_dir = tempfile::tempdir().unwrap();
        let other_token = sessions(&"cd".repeat(32), &other_dir).await;
        assert!(other_token.unsealed(&with_cookie(&value)).is_none());
        let mut altered = value.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(s.unsealed(&with_cookie(&altered)).is_none());
        // Signed out through another node (same store, caches of its own): this node trusts its
        // last look for RECHECK, then sees the mark.
        let other_node = Sessions {
            revoked: Arc::new(moka::sync::Cache::new(10)),
            checked: Arc::new(moka::sync::Cache::new(10)),
            ..s.clone()
        };
        other_node.revoke(&open).await.unwrap();
        assert!(s.open(&with_cookie(&value)).await.unwrap().is_some());
        s.checked.invalidate_all();
        assert!(s.open(&with_cookie(&value)).await.unwrap().is_none());
        assert!(
            other_node
                .open(&with_cookie(&value))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn csrf_must_match_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(&"ab".repeat(32), &dir).await;
        let (_, session) = s.issue();
        let mut h = HeaderMap::new();
        assert!(!Sessions::csrf_matches(&session, &h));
        h.insert(CSRF_HEADER, HeaderValue::from_static("nope"));
        assert!(!Sessions::csrf_matches(&session, &h));
        h.insert(CSRF_HEADER, HeaderValue::from_str(&session.csrf).unwrap());
        assert!(Sessions::csrf_matches(&session, &h));
    }
}
