//! `/api/auth/*`: magic-link sign-in, refresh-token rotation, logout, me.
//!
//! Refresh tokens are opaque 256-bit random strings stored only as SHA-256
//! hashes, in families: every rotation of one sign-in shares a family, and
//! presenting a spent token revokes the whole family (a stolen token that
//! was used by the thief or by the owner ends the sign-in for both).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use io_auth::{hash_token, random_token};
use io_domain::model::RefreshOutcome;
use io_domain::types::{Alias, Email, TokenFamilyId, UserId};
use io_domain::Chat;
use serde_json::json;

use crate::error::{HttpError, HttpResult};
use crate::extract::{bearer, AuthUser, ClientIp, JsonObject};
use crate::Shared;

/// The one answer to every well-formed sign-in request.
const LINK_SENT: &str = "If this address may sign in, a sign-in link is on its way.";

/// `POST /api/auth/send-magic-link {email}` → 202.
pub(crate) async fn send_magic_link(
    State(state): State<Shared>,
    ip: ClientIp,
    body: JsonObject,
) -> HttpResult<Response> {
    body.only(&["email"])?;
    let email = Email::parse(body.string("email")?)?;
    // Asked of a cached flag, not the server, and for every address alike:
    // an outage is visible, which address was asked for is not.
    if !state.mailer.is_up() {
        metrics::counter!("io_auth_magic_link_errors_total", "stage" => "mail_down").increment(1);
        return Err(HttpError::unavailable(
            "sign-in mail cannot be sent right now, try again in a minute",
        ));
    }
    state.limiters.magic_link_per_ip.check(&ip.0)?;
    state.limiters.magic_link_per_email.check(&email)?;
    state.links.enqueue(email)?;
    metrics::counter!("io_auth_magic_links_requested_total").increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({ "message": LINK_SENT }))).into_response())
}

/// A fresh access token and a new refresh token in `family`.
async fn issue_tokens(
    state: &Shared,
    user: UserId,
    family: TokenFamilyId,
) -> HttpResult<(String, String)> {
    let refresh = random_token();
    let now = Utc::now();
    state
        .chat
        .store()
        .insert_refresh_token(
            &hash_token(&refresh),
            family,
            user,
            now + state.settings.refresh_ttl,
            now,
        )
        .await?;
    Ok((state.tokens.issue_access(user), refresh))
}

/// `POST /api/auth/verify-token {token}` → tokens and the user, created on
/// first sign-in.
pub(crate) async fn verify_token(
    State(state): State<Shared>,
    ip: ClientIp,
    body: JsonObject,
) -> HttpResult<Json<serde_json::Value>> {
    // Every attempt counts, before anything is looked up.
    state.limiters.verify_per_ip.check(&ip.0)?;
    body.only(&["token"])?;
    let token = body.string("token")?;
    if token.is_empty() {
        return Err(HttpError::invalid("token", "is required"));
    }
    let store = state.chat.store();
    let now = Utc::now();
    let email = store
        .take_magic_link(&hash_token(token), now)
        .await?
        .ok_or_else(|| HttpError::unauthorized("this sign-in link is invalid, used or expired"))?;
    let user = store.upsert_user(&email, &Alias::generate(), now).await?;
    let (access, refresh) = issue_tokens(&state, user.id, TokenFamilyId::new()).await?;
    metrics::counter!("io_auth_sign_ins_total").increment(1);
    Ok(Json(json!({
        "accessToken": access,
        "refreshToken": refresh,
        "expiresIn": state.tokens.access_ttl().as_secs(),
        "user": Chat::user_view(&user),
    })))
}

/// `POST /api/auth/refresh {refreshToken}` → rotated tokens.
pub(crate) async fn refresh(
    State(state): State<Shared>,
    body: JsonObject,
) -> HttpResult<Json<serde_json::Value>> {
    body.only(&["refreshToken"])?;
    let old = body.string("refreshToken")?;
    let new = state.tokens.refresh_successor(old);
    let now = Utc::now();
    let outcome = state
        .chat
        .store()
        .rotate_refresh_token(
            &hash_token(old),
            &hash_token(&new),
            now + state.settings.refresh_ttl,
            now,
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { user_id } => {
            metrics::counter!("io_auth_refresh_total", "result" => "rotated").increment(1);
            Ok(Json(json!({
                "accessToken": state.tokens.issue_access(user_id),
                "refreshToken": new,
                "expiresIn": state.tokens.access_ttl().as_secs(),
            })))
        }
        RefreshOutcome::Reused { user_id } => {
            metrics::counter!("io_auth_refresh_total", "result" => "reused").increment(1);
            tracing::warn!(user = %user_id, "refresh token reused: sign-in revoked");
            Err(HttpError::unauthorized(
                "this sign-in has ended, sign in again",
            ))
        }
        RefreshOutcome::Invalid => {
            metrics::counter!("io_auth_refresh_total", "result" => "invalid").increment(1);
            Err(HttpError::unauthorized("invalid or expired refresh token"))
        }
    }
}

/// `POST /api/auth/logout {refreshToken?}` → 204.
///
/// With a valid access token: the given refresh token's family ends, or,
/// without one, every sign-in of the user. Without a valid access token
/// (it may have expired in an idle tab) the refresh token alone proves the
/// sign-in and its family ends.
pub(crate) async fn logout(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: JsonObject,
) -> HttpResult<StatusCode> {
    body.only(&["refreshToken"])?;
    let refresh = body.opt_string("refreshToken")?;
    let user = bearer(&headers).and_then(|t| state.tokens.verify_access(t).ok());
    let store = state.chat.store();
    match (user, refresh) {
        (Some(user), Some(refresh)) => {
            store
                .revoke_refresh_family(&hash_token(refresh), user)
                .await?
        }
        (Some(user), None) => store.revoke_user_refresh_tokens(user).await?,
        (None, Some(refresh)) => {
            // The store revokes a family by a token plus its owner, and only
            // rotation tells the owner: rotate into a token born expired,
            // then revoke the family it belongs to.
            let now = Utc::now();
            let dead = hash_token(&random_token());
            match store
                .rotate_refresh_token(&hash_token(refresh), &dead, now, now)
                .await?
            {
                RefreshOutcome::Rotated { user_id } => {
                    store.revoke_refresh_family(&dead, user_id).await?
                }
                // Reuse already revoked the family.
                RefreshOutcome::Reused { .. } => {}
                RefreshOutcome::Invalid => {
                    return Err(HttpError::unauthorized("invalid or expired refresh token"))
                }
            }
        }
        (None, None) => {
            return Err(HttpError::unauthorized(
                "send a bearer access token or a refresh token",
            ))
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/auth/me` → `{user}`.
pub(crate) async fn me(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
) -> HttpResult<Json<serde_json::Value>> {
    let user = state.chat.me(user).await?;
    Ok(Json(json!({ "user": Chat::user_view(&user) })))
}
