//! `/api/users/*`: the signed-in user's profile and identity card, an alias
//! suggestion for onboarding, and how many people are online.

use axum::extract::State;
use axum::Json;
use io_domain::model::ProfileUpdate;
use io_domain::types::{Alias, CardText, Gender, Seeking};
use io_domain::Chat;
use serde_json::{json, Value};

use crate::error::HttpResult;
use crate::extract::{AuthUser, JsonObject};
use crate::Shared;

/// Longest real name on an identity card, in characters.
pub(crate) const REAL_NAME_MAX: usize = 80;
/// Longest free text on an identity card, in characters.
pub(crate) const DETAILS_MAX: usize = 500;

const PROFILE_FIELDS: &[&str] = &[
    "alias",
    "gender",
    "seeking",
    "realName",
    "details",
    "revealEmail",
];

/// `GET /api/users/profile` → `{profile}`.
pub(crate) async fn get_profile(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
) -> HttpResult<Json<Value>> {
    let user = state.chat.me(user).await?;
    Ok(Json(json!({ "profile": Chat::profile_view(&user) })))
}

/// Parse a profile change. Fields are checked in the order of the form, and
/// the first bad one is named.
fn parse_update(body: &JsonObject) -> HttpResult<ProfileUpdate> {
    body.only(PROFILE_FIELDS)?;
    let card = |field: &'static str, max: usize| -> HttpResult<Option<Option<CardText>>> {
        match body.nullable_string(field)? {
            None => Ok(None),
            Some(None) => Ok(Some(None)),
            Some(Some(raw)) => Ok(Some(CardText::parse(field, raw, max)?)),
        }
    };
    Ok(ProfileUpdate {
        alias: body.opt_string("alias")?.map(Alias::parse).transpose()?,
        gender: body.opt_string("gender")?.map(Gender::parse).transpose()?,
        seeking: body
            .opt_string("seeking")?
            .map(Seeking::parse)
            .transpose()?,
        real_name: card("realName", REAL_NAME_MAX)?,
        details: card("details", DETAILS_MAX)?,
        reveal_email: body.opt_bool("revealEmail")?,
    })
}

/// `PUT /api/users/profile {alias?, gender?, seeking?, realName?, details?,
/// revealEmail?}` → `{profile}`. `null` or `""` clears a card text.
pub(crate) async fn put_profile(
    State(state): State<Shared>,
    AuthUser(user): AuthUser,
    body: JsonObject,
) -> HttpResult<Json<Value>> {
    let update = parse_update(&body)?;
    let user = state.chat.update_profile(user, &update).await?;
    Ok(Json(json!({ "profile": Chat::profile_view(&user) })))
}

/// `GET /api/users/alias-suggestion` → `{alias}`.
pub(crate) async fn alias_suggestion(_: AuthUser) -> Json<Value> {
    Json(json!({ "alias": Alias::generate() }))
}

/// `GET /api/users/online-count` → `{count, waiting: {dude, girl}}`.
pub(crate) async fn online_count(
    State(state): State<Shared>,
    _: AuthUser,
) -> HttpResult<Json<Value>> {
    let (count, waiting) = state.chat.online().await?;
    Ok(Json(json!({ "count": count, "waiting": waiting })))
}
