//! The wire contract of IO (design 3.2 and 3.3): every JSON shape a client
//! sees or sends. Pure data with serde; no rules and no I/O live here, so the
//! gateway, the api, the load harness and tests all speak exactly these types.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user as they see themselves (`/api/auth/me`, `connected.user`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub alias: String,
    /// `null` until onboarding picked one.
    pub gender: Option<String>,
    pub seeking: String,
    pub created_at: DateTime<Utc>,
}

/// Full profile of the signed-in user, identity card included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    pub id: Uuid,
    pub email: String,
    pub alias: String,
    pub gender: Option<String>,
    pub seeking: String,
    pub real_name: Option<String>,
    pub details: Option<String>,
    pub reveal_email: bool,
    pub created_at: DateTime<Utc>,
}

/// The partner before a reveal: alias and gender, never anything identifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartnerView {
    pub alias: String,
    pub gender: Option<String>,
}

/// An identity card, shown only after a mutual reveal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityCard {
    pub alias: String,
    pub real_name: Option<String>,
    pub details: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identities {
    pub me: IdentityCard,
    pub partner: IdentityCard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevealView {
    /// `none`, `pending`, `accepted` or `declined`.
    pub state: String,
    /// `me`, `partner` or `null`.
    pub requested_by: Option<String>,
    /// In an active session whose latest request is the viewer's own,
    /// pending or declined: how many more times the viewer may ask (0–2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asks_left: Option<u8>,
}

/// A session as one of its two participants sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub id: Uuid,
    /// `active`, `ended` or `rated`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// Who ended it, as the viewer sees it: `me` or `partner`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended_by: Option<String>,
    pub partner: PartnerView,
    /// Whether the partner has a socket open right now (an active session
    /// read at a (re)connect or by current-session; absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub partner_online: Option<bool>,
    pub reveal: RevealView,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub my_rating: Option<u8>,
    /// Identity cards, present once both said yes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identities: Option<Identities>,
    /// The latest messages (current-session and `connected` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub messages: Option<Vec<MessageView>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub client_msg_id: String,
    pub is_me: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevealRequestView {
    pub id: Uuid,
    pub session_id: Uuid,
    /// `pending`, `accepted` or `declined`.
    pub status: String,
    /// `me` or `partner`.
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub identities: Option<Identities>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RatingView {
    pub session_id: Uuid,
    pub rating: u8,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingCounts {
    pub dude: u64,
    pub girl: u64,
}

/// Error body of every HTTP error: `{"error": {...}}`; also the `data` of the
/// WebSocket `error` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// Client → server WebSocket frames (design 3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "data",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ClientEvent {
    Join(JoinData),
    FindMatch(Empty),
    CancelSearch(Empty),
    SendMessage(SendMessageData),
    TypingStart(SessionRef),
    TypingStop(SessionRef),
    RevealRequest(SessionRef),
    RevealRespond(RevealRespondData),
    EndSession(SessionRef),
    RateSession(RateData),
}

impl ClientEvent {
    /// The event's wire name, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ClientEvent::Join(_) => "join",
            ClientEvent::FindMatch(_) => "find_match",
            ClientEvent::CancelSearch(_) => "cancel_search",
            ClientEvent::SendMessage(_) => "send_message",
            ClientEvent::TypingStart(_) => "typing_start",
            ClientEvent::TypingStop(_) => "typing_stop",
            ClientEvent::RevealRequest(_) => "reveal_request",
            ClientEvent::RevealRespond(_) => "reveal_respond",
            ClientEvent::EndSession(_) => "end_session",
            ClientEvent::RateSession(_) => "rate_session",
        }
    }
}

/// `{}`; also accepts a missing `data`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinData {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionRef {
    pub session_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendMessageData {
    pub session_id: Uuid,
    pub content: String,
    pub client_msg_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevealRespondData {
    pub session_id: Uuid,
    pub accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateData {
    pub session_id: Uuid,
    pub rating: i64,
}

/// Server → client WebSocket events (design 3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerEvent {
    Connected(ConnectedData),
    Searching(Empty),
    SearchCancelled(Empty),
    MatchFound(MatchFoundData),
    MessageReceived(MessageData),
    UserTyping(SessionRef),
    UserStoppedTyping(SessionRef),
    RevealRequested(RevealRequestedData),
    RevealResponse(RevealResponseData),
    SessionEnded(SessionEndedData),
    SessionRated(SessionRatedData),
    UserJoined(SessionRef),
    UserLeft(SessionRef),
    OnlineCount(OnlineCountData),
    Error(ErrorBody),
}

impl ServerEvent {
    /// The event's wire name, for metrics labels and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ServerEvent::Connected(_) => "connected",
            ServerEvent::Searching(_) => "searching",
            ServerEvent::SearchCancelled(_) => "search_cancelled",
            ServerEvent::MatchFound(_) => "match_found",
            ServerEvent::MessageReceived(_) => "message_received",
            ServerEvent::UserTyping(_) => "user_typing",
            ServerEvent::UserStoppedTyping(_) => "user_stopped_typing",
            ServerEvent::RevealRequested(_) => "reveal_requested",
            ServerEvent::RevealResponse(_) => "reveal_response",
            ServerEvent::SessionEnded(_) => "session_ended",
            ServerEvent::SessionRated(_) => "session_rated",
            ServerEvent::UserJoined(_) => "user_joined",
            ServerEvent::UserLeft(_) => "user_left",
            ServerEvent::OnlineCount(_) => "online_count",
            ServerEvent::Error(_) => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectedData {
    pub user: UserView,
    pub node: String,
    pub online_count: u64,
    pub session: Option<SessionView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchFoundData {
    pub session: SessionView,
    pub user: PartnerView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageData {
    pub message: MessageView,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevealRequestedData {
    pub session_id: Uuid,
    pub requester_alias: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevealResponseData {
    pub session_id: Uuid,
    /// `accepted` or `declined`.
    pub status: String,
    pub identities: Option<Identities>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEndedData {
    pub session_id: Uuid,
    /// `me` or `partner`.
    pub ended_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRatedData {
    pub session_id: Uuid,
    pub rating: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnlineCountData {
    pub count: u64,
}

/// One frame on the wire: `{"type", "data", "ref"?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutFrame<'a> {
    #[serde(flatten)]
    pub event: &'a ServerEvent,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<&'a str>,
}

/// Serialize a server event with an optional `ref`.
pub fn encode(event: &ServerEvent, reference: Option<&str>) -> String {
    serde_json::to_string(&OutFrame { event, reference }).expect("server events always serialize")
}

/// An inbound frame split into its parts, so a bad `data` still has a `ref`
/// to answer with.
#[derive(Debug, Deserialize)]
pub struct InFrame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
}

/// Why an inbound frame could not be understood: a message for people, and
/// the field of `data` it is about when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reference: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

/// Parse a client text frame. Unknown types and wrong payloads are errors
/// that keep whatever `ref` could be read.
pub fn decode(text: &str) -> Result<(ClientEvent, Option<String>), DecodeError> {
    let frame: InFrame = serde_json::from_str(text).map_err(|e| {
        let (field, message) = if e.is_syntax() || e.is_eof() {
            (None, format!("malformed JSON: {e}"))
        } else {
            // Rare: parse again, tracking the path, to name the field.
            let mut json = serde_json::Deserializer::from_str(text);
            match serde_path_to_error::deserialize::<_, InFrame>(&mut json).map_err(|e| located(&e))
            {
                Err((Some(field), message)) => (Some(field), message),
                // Not an object at all (null, a list, a number).
                _ => (
                    None,
                    "a frame is a JSON object {type, data?, ref?}".to_owned(),
                ),
            }
        };
        DecodeError {
            reference: loose_reference(text),
            field,
            message,
        }
    })?;
    let data = frame
        .data
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !data.is_object() {
        return Err(DecodeError {
            reference: frame.reference,
            field: Some("data".to_owned()),
            message: "must be an object".to_owned(),
        });
    }
    let event = match frame.kind.as_str() {
        "join" => payload(data).map(ClientEvent::Join),
        "find_match" => payload(data).map(ClientEvent::FindMatch),
        "cancel_search" => payload(data).map(ClientEvent::CancelSearch),
        "send_message" => payload(data).map(ClientEvent::SendMessage),
        "typing_start" => payload(data).map(ClientEvent::TypingStart),
        "typing_stop" => payload(data).map(ClientEvent::TypingStop),
        "reveal_request" => payload(data).map(ClientEvent::RevealRequest),
        "reveal_respond" => payload(data).map(ClientEvent::RevealRespond),
        "end_session" => payload(data).map(ClientEvent::EndSession),
        "rate_session" => payload(data).map(ClientEvent::RateSession),
        other => Err((
            Some("type".to_owned()),
            format!("unknown event type `{other}`"),
        )),
    };
    match event {
        Ok(event) => Ok((event, frame.reference)),
        Err((field, message)) => Err(DecodeError {
            reference: frame.reference,
            field,
            message,
        }),
    }
}

/// One event's `data`. Errors are rare, so only a failed parse runs again
/// with its path tracked, to name the field.
fn payload<T: serde::de::DeserializeOwned>(
    data: serde_json::Value,
) -> Result<T, (Option<String>, String)> {
    T::deserialize(&data).map_err(|_| match serde_path_to_error::deserialize::<_, T>(&data) {
        Ok(_) => (None, "invalid data".to_owned()),
        Err(e) => located(&e),
    })
}

/// A parse error said for people, with the field it is about: the one
/// serde names (a missing or unknown field), else the last key of its path.
fn located(e: &serde_path_to_error::Error<serde_json::Error>) -> (Option<String>, String) {
    let (named, message) = explain(&e.inner().to_string());
    let at = e
        .path()
        .iter()
        .next_back()
        .and_then(|segment| match segment {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        });
    (named.or(at), message)
}

/// serde's message for a value of the wrong shape, said for people, and the
/// field it names when it names one.
fn explain(serde_message: &str) -> (Option<String>, String) {
    // serde_json ends a message read from text with its position.
    let serde_message = match serde_message.rsplit_once(" at line ") {
        Some((message, position)) if position.contains(" column ") => message,
        _ => serde_message,
    };
    let quoted = |rest: &str| rest.split('`').nth(1).map(str::to_owned);
    if let Some(rest) = serde_message.strip_prefix("missing field ") {
        return (quoted(rest), "is required".to_owned());
    }
    if let Some(rest) = serde_message.strip_prefix("unknown field ") {
        return (quoted(rest), "is not a field of this event".to_owned());
    }
    // A null where a value must be is a missing value, as REST says it.
    if serde_message.starts_with("invalid type: null") {
        return (None, "is required".to_owned());
    }
    if serde_message.starts_with("UUID parsing failed") {
        return (None, "must be a UUID".to_owned());
    }
    if serde_message.starts_with("invalid type") || serde_message.starts_with("invalid value") {
        if let Some((_, expected)) = serde_message.rsplit_once(", expected ") {
            let expected = match expected {
                "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
                "a boolean" => "true or false",
                "a map" => "an object",
                e if e.starts_with("struct ") => "an object",
                e if e.contains("UUID") => "a UUID",
                e => e,
            };
            return (None, format!("must be {expected}"));
        }
    }
    (None, serde_message.to_owned())
}

/// The string `ref` of a JSON object that is not a well-formed frame (no
/// `type`, say), so its error still answers it.
fn loose_reference(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct RefOnly {
        #[serde(rename = "ref")]
        reference: Option<String>,
    }
    serde_json::from_str::<RefOnly>(text).ok()?.reference
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_with_and_without_data() {
        let (ev, r) = decode(r#"{"type":"find_match","ref":"7"}"#).unwrap();
        assert_eq!(ev, ClientEvent::FindMatch(Empty {}));
        assert_eq!(r.as_deref(), Some("7"));
        let (ev, _) = decode(r#"{"type":"join","data":{"token":"t"}}"#).unwrap();
        assert_eq!(ev, ClientEvent::Join(JoinData { token: "t".into() }));
    }

    #[test]
    fn unknown_types_and_fields_are_errors_that_keep_the_ref() {
        let err = decode(r#"{"type":"nope","data":{},"ref":"a"}"#).unwrap_err();
        assert_eq!(err.reference.as_deref(), Some("a"));
        let err = decode(r#"{"type":"join","data":{"token":"t","x":1},"ref":"b"}"#).unwrap_err();
        assert_eq!(err.reference.as_deref(), Some("b"));
        assert!(decode("not json").is_err());
    }

    #[test]
    fn errors_name_the_field_and_say_what_it_must_be() {
        let sid = "0190f0e0-0000-7000-8000-000000000001";
        let cases = [
            (
                format!(r#"{{"type":"rate_session","data":{{"sessionId":"{sid}","rating":2.5}}}}"#),
                Some("rating"),
                "must be an integer",
            ),
            (
                r#"{"type":"end_session","data":{"sessionId":"nope"}}"#.to_owned(),
                Some("sessionId"),
                "must be a UUID",
            ),
            (
                format!(
                    r#"{{"type":"reveal_respond","data":{{"sessionId":"{sid}","accept":"yes"}}}}"#
                ),
                Some("accept"),
                "must be true or false",
            ),
            (
                format!(
                    r#"{{"type":"reveal_respond","data":{{"sessionId":"{sid}","accept":null}}}}"#
                ),
                Some("accept"),
                "is required",
            ),
            (
                format!(
                    r#"{{"type":"send_message","data":{{"sessionId":"{sid}","clientMsgId":"1"}}}}"#
                ),
                Some("content"),
                "is required",
            ),
            (
                r#"{"type":"find_match","data":{"x":1}}"#.to_owned(),
                Some("x"),
                "is not a field of this event",
            ),
            (
                r#"{"type":"dance","data":{}}"#.to_owned(),
                Some("type"),
                "unknown event type `dance`",
            ),
            (r#"{"data":{}}"#.to_owned(), Some("type"), "is required"),
            (
                "null".to_owned(),
                None,
                "a frame is a JSON object {type, data?, ref?}",
            ),
            (
                r#"{"type":5,"data":{}}"#.to_owned(),
                Some("type"),
                "must be a string",
            ),
            (
                r#"{"type":"find_match","ref":5}"#.to_owned(),
                Some("ref"),
                "must be a string",
            ),
            (
                r#"{"type":"end_session","data":{"sessionId":null}}"#.to_owned(),
                Some("sessionId"),
                "is required",
            ),
            (
                r#"{"type":"end_session","data":[1]}"#.to_owned(),
                Some("data"),
                "must be an object",
            ),
        ];
        for (frame, field, message) in cases {
            let err = decode(&frame).unwrap_err();
            assert_eq!(err.field.as_deref(), field, "{frame}");
            assert_eq!(err.message, message, "{frame}");
        }
        let err = decode("{nope").unwrap_err();
        assert_eq!(err.field, None);
        assert!(
            err.message.starts_with("malformed JSON: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn frames_without_a_valid_type_keep_a_string_ref() {
        let err = decode(r#"{"data":{},"ref":"notype"}"#).unwrap_err();
        assert_eq!(err.reference.as_deref(), Some("notype"));
        let err = decode(r#"{"type":5,"data":{},"ref":"typeint"}"#).unwrap_err();
        assert_eq!(err.reference.as_deref(), Some("typeint"));
        let err = decode(r#"{"type":5,"ref":{"not":"a string"}}"#).unwrap_err();
        assert_eq!(err.reference, None);
    }

    #[test]
    fn encodes_type_data_and_ref() {
        let s = encode(&ServerEvent::Searching(Empty {}), Some("r1"));
        assert_eq!(s, r#"{"type":"searching","data":{},"ref":"r1"}"#);
        let s = encode(
            &ServerEvent::OnlineCount(OnlineCountData { count: 3 }),
            None,
        );
        assert_eq!(s, r#"{"type":"online_count","data":{"count":3}}"#);
    }
}
