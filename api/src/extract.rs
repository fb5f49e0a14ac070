//! Request extractors that fail with the API's JSON error shape: a strict
//! JSON object body read field by field (so each error names its field), the
//! bearer-authenticated user, and the client's IP address for rate limits.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use bytes::Bytes;
use io_domain::types::UserId;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{HttpError, HttpResult};
use crate::Shared;

/// A JSON object body. An empty body (no bytes at all) counts as `{}`, so actions without
/// parameters accept both; anything else must be `application/json` and an
/// object. Handlers then read it with the typed getters, which name the field
/// in every error.
#[derive(Debug, Default)]
pub(crate) struct JsonObject(Map<String, Value>);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| HttpError::for_status(e.status()))?;
        if bytes.is_empty() {
            return Ok(JsonObject::default());
        }
        if !json {
            return Err(HttpError::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(HttpError::bad_request("the body must be a JSON object")),
            Err(e) => Err(HttpError::bad_request(format!("malformed JSON: {e}"))),
        }
    }
}

impl JsonObject {
    /// Strict bodies: a field outside `allowed` is an error naming it.
    pub fn only(&self, allowed: &[&str]) -> HttpResult<()> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(HttpError::invalid(unknown.as_str(), "unknown field")),
            None => Ok(()),
        }
    }

    fn required(&self, name: &str) -> HttpResult<&Value> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(HttpError::invalid(name, "is required")),
            Some(v) => Ok(v),
        }
    }

    pub fn string(&self, name: &str) -> HttpResult<&str> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| HttpError::invalid(name, "must be a string"))
    }

    /// Absent is `None`; `null` is an error (the field cannot be cleared).
    pub fn opt_string(&self, name: &str) -> HttpResult<Option<&str>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(HttpError::invalid(name, "must be a string")),
        }
    }

    /// Absent is `None`, `null` is `Some(None)` (clear the field).
    pub fn nullable_string(&self, name: &str) -> HttpResult<Option<Option<&str>>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(Value::String(s)) => Ok(Some(Some(s))),
            Some(_) => Err(HttpError::invalid(name, "must be a string or null")),
        }
    }

    pub fn uuid(&self, name: &str) -> HttpResult<Uuid> {
        Uuid::parse_str(self.string(name)?).map_err(|_| HttpError::invalid(name, "must be a UUID"))
    }

    pub fn bool(&self, name: &str) -> HttpResult<bool> {
        self.required(name)?
            .as_bool()
            .ok_or_else(|| HttpError::invalid(name, "must be true or false"))
    }

    pub fn opt_bool(&self, name: &str) -> HttpResult<Option<bool>> {
        match self.0.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(HttpError::invalid(name, "must be true or false")),
        }
    }

    /// An integer; ones beyond `i64` saturate so the domain's range check
    /// reports them like any other out-of-range value.
    pub fn integer(&self, name: &str) -> HttpResult<i64> {
        let v = self.required(name)?;
        if let Some(i) = v.as_i64() {
            return Ok(i);
        }
        if v.as_u64().is_some() {
            return Ok(i64::MAX);
        }
        Err(HttpError::invalid(name, "must be an integer"))
    }
}

/// The user a valid access token speaks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthUser(pub UserId);

/// The bearer token of the request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<Shared> for AuthUser {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, HttpError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| HttpError::unauthorized("missing bearer token"))?;
        state
            .tokens
            .verify_access(token)
            .map(AuthUser)
            .map_err(|_| HttpError::unauthorized("invalid or expired access token"))
    }
}

/// The client's address as rate limits see it. IPv6 clients are keyed by
/// their /64, which one host usually owns whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientIp(pub IpAddr);

impl FromRequestParts<Shared> for ClientIp {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, HttpError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let forwarded = state
            .settings
            .trust_forwarded
            .then(|| forwarded_ip(&parts.headers))
            .flatten();
        // Without connect info (a router driven in-process) every request
        // shares one bucket, which errs on the side of limiting.
        let ip = forwarded
            .or(peer)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(rate_key(ip)))
    }
}

/// The client address a trusted reverse proxy reports: `X-Real-IP` (which
/// Nginx sets from the peer address, replacing any client value), else the
/// right-most `X-Forwarded-For` entry, the one our proxy appended; entries
/// further left come from the client and can be forged.
fn forwarded_ip(headers: &HeaderMap) -> Option<IpAddr> {
    let real = headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    real.or_else(|| {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
    })
}

fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn forwarded_ip_trusts_the_proxy_entry_only() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.0.0.7"),
        );
        assert_eq!(forwarded_ip(&h), Some("10.0.0.7".parse().unwrap()));
        h.insert("x-real-ip", HeaderValue::from_static("192.0.2.1"));
        assert_eq!(forwarded_ip(&h), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(forwarded_ip(&HeaderMap::new()), None);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = rate_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = rate_key("2001:db8:1:2:bbbb::2".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(
            rate_key("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  xyz "),
        );
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!is_json(&h));
    }
}
