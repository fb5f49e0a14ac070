//! `/api/chat/*`: the REST face of [`io_domain::Chat`]. Each handler parses,
//! authenticates, calls one `Chat` method as `Actor::rest(user)` and
//! serializes; every rule (membership, state, limits) lives in the domain.
//!
//! A malformed UUID, in the path or the body, is `400 VALIDATION_ERROR`
//! naming the field (`id` or `sessionId`); a well-formed id of a session
//! that is not yours is `404 NOT_FOUND`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use io_domain::types::SessionId;
use io_domain::Actor;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::{HttpError, HttpResult};
use crate::extract::{AuthUser, JsonObject};
use crate::Shared;

fn session_id(body: &JsonObject) -> HttpResult<SessionId> {
    body.uuid("sessionId").map(SessionId)
}

/// `POST /api/chat/find-match` → 202 `{status: "searching"}`.
pub(crate) async fn find_match(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<(StatusCode, Json<Value>)> {
    body.only(&[])?;
    state.chat.find_match(&Actor::rest(user)).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "status": "searching" }))))
}

/// `POST /api/chat/cancel-search` → `{status: "idle"}`; 409 in a chat.
pub(crate) async fn cancel_search(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<Json<Value>> {
    body.only(&[])?;
    state.chat.cancel_search(&Actor::rest(user)).await?;
    Ok(Json(json!({ "status": "idle" })))
}

/// `GET /api/chat/current-session` → `{session | null}`.
pub(crate) async fn current_session(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
) -> HttpResult<Json<Value>> {
    let session = state.chat.current_session(user).await?;
    Ok(Json(json!({ "session": session })))
}

/// The query of a history page: `after` (default 0) and `limit`.
fn page_query(raw: Option<&str>) -> HttpResult<(i64, Option<u32>)> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|_| HttpError::bad_request("malformed query string"))?;
    let mut after = 0;
    let mut limit = None;
    for (key, value) in pairs {
        match key.as_str() {
            "after" => {
                after = value
                    .parse()
                    .map_err(|_| HttpError::invalid("after", "must be an integer"))?
            }
            "limit" => {
                limit = Some(
                    value
                        .parse()
                        .map_err(|_| HttpError::invalid("limit", "must be 1 to 200"))?,
                )
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// `GET /api/chat/sessions/{id}/messages?after=&limit=` → `{messages}`.
pub(crate) async fn messages(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    id: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> HttpResult<Json<Value>> {
    let Path(id) = id.map_err(|_| HttpError::invalid("id", "must be a UUID"))?;
    let id = Uuid::parse_str(&id).map_err(|_| HttpError::invalid("id", "must be a UUID"))?;
    let (after, limit) = page_query(query.as_deref())?;
    let messages = state
        .chat
        .history(user, SessionId(id), after, limit)
        .await?;
    Ok(Json(json!({ "messages": messages })))
}

/// `POST /api/chat/send-message {sessionId, content, clientMsgId}` → 201
/// `{message}`.
pub(crate) async fn send_message(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<(StatusCode, Json<Value>)> {
    body.only(&["sessionId", "content", "clientMsgId"])?;
    let session = session_id(&body)?;
    let content = body.string("content")?;
    let client_msg_id = body.string("clientMsgId")?;
    let message = state
        .chat
        .send_message(&Actor::rest(user), session, content, client_msg_id)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "message": message }))))
}

/// `POST /api/chat/reveal-request {sessionId}` → 201 `{revealRequest}`.
pub(crate) async fn reveal_request(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<(StatusCode, Json<Value>)> {
    body.only(&["sessionId"])?;
    let session = session_id(&body)?;
    let request = state
        .chat
        .reveal_request(&Actor::rest(user), session)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "revealRequest": request })),
    ))
}

/// `POST /api/chat/reveal-respond {sessionId, accept}` → `{revealRequest}`.
pub(crate) async fn reveal_respond(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<Json<Value>> {
    body.only(&["sessionId", "accept"])?;
    let session = session_id(&body)?;
    let accept = body.bool("accept")?;
    let request = state
        .chat
        .reveal_respond(&Actor::rest(user), session, accept)
        .await?;
    Ok(Json(json!({ "revealRequest": request })))
}

/// `POST /api/chat/end-session {sessionId}` → `{session}`.
pub(crate) async fn end_session(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<Json<Value>> {
    body.only(&["sessionId"])?;
    let session = session_id(&body)?;
    let session = state.chat.end_session(&Actor::rest(user), session).await?;
    Ok(Json(json!({ "session": session })))
}

/// `POST /api/chat/rate-session {sessionId, rating}` → 201 `{rating}`.
pub(crate) async fn rate_session(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<(StatusCode, Json<Value>)> {
    body.only(&["sessionId", "rating"])?;
    let session = session_id(&body)?;
    let rating = body.integer("rating")?;
    let rating = state
        .chat
        .rate_session(&Actor::rest(user), session, rating)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "rating": rating }))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_query_parses_and_names_bad_fields() {
        assert_eq!(page_query(None).unwrap(), (0, None));
        assert_eq!(page_query(Some("after=5&limit=20")).unwrap(), (5, Some(20)));
        assert_eq!(
            page_query(Some("after=x")).unwrap_err().field.as_deref(),
            Some("after")
        );
        assert_eq!(
            page_query(Some("limit=-1")).unwrap_err().field.as_deref(),
            Some("limit")
        );
        assert_eq!(page_query(Some("other=1")).unwrap(), (0, None));
    }
}
