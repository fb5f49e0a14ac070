//! Credentials shared by the api (which issues them) and the gateway (which
//! checks them on `join`): access JWTs and opaque random tokens stored only
//! as SHA-256 hashes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use io_domain::types::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `iss` of every access token.
pub const ISSUER: &str = "io";
/// `aud` of every access token.
pub const AUDIENCE: &str = "io-chat";
/// `typ` claim: keeps any other token signed with the same key from
/// passing as an access token.
pub const ACCESS_TYPE: &str = "access";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token")]
    Invalid,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    iss: String,
    aud: String,
    typ: String,
    iat: i64,
    exp: i64,
}

/// Signs and checks access tokens with HS256 (pinned), keyed by `kid` so a
/// new key can be rolled in while tokens of the old one still verify.
pub struct Tokens {
    current_kid: String,
    encoding: EncodingKey,
    /// Every key that may have signed a live token, by `kid`.
    decoding: Vec<(String, DecodingKey)>,
    access_ttl: Duration,
    /// Keys [`Tokens::refresh_successor`]; derived from the signing secret.
    successor_key: [u8; 32],
}

impl Tokens {
    /// Access tokens live at most this long (design: ≤ 15 min).
    pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

    /// `secret` signs new tokens; `previous` secrets still verify old ones.
    pub fn new(secret: &[u8], previous: &[Vec<u8>], access_ttl: Duration) -> Self {
        let kid = key_id(secret);
        let mut decoding = vec![(kid.clone(), DecodingKey::from_secret(secret))];
        for old in previous {
            decoding.push((key_id(old), DecodingKey::from_secret(old)));
        }
        Tokens {
            current_kid: kid,
            encoding: EncodingKey::from_secret(secret),
            decoding,
            access_ttl,
            successor_key: Sha256::new()
                .chain_update(b"io refresh-token successor\0")
                .chain_update(secret)
                .finalize()
                .into(),
        }
    }

    /// The refresh token that replaces `old` at its rotation: always the
    /// same one for the same `old`, so requests racing with one token (or
    /// retried after a lost answer) all get the one successor and the sign-in
    /// stays a single chain; unguessable without the server's secret.
    pub fn refresh_successor(&self, old: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.successor_key)
            .expect("HMAC takes a key of any length");
        mac.update(old.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    /// A signed access token for `user`.
    pub fn issue_access(&self, user: UserId) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.0,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            typ: ACCESS_TYPE.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current_kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("HS256 signing with an HMAC key cannot fail")
    }

    /// The user an access token speaks for, if it is genuine, live, ours,
    /// and an access token.
    pub fn verify_access(&self, token: &str) -> Result<UserId, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let key = self
            .decoding
            .iter()
            .find(|(k, _)| *k == kid)
            .map(|(_, key)| key)
            .ok_or(TokenError::Invalid)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|_| TokenError::Invalid)?;
        if data.claims.typ != ACCESS_TYPE {
            return Err(TokenError::Invalid);
        }
        Ok(UserId(data.claims.sub))
    }
}

/// A short public name for a key: the first bytes of its hash.
fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::digest([b"io-kid:".as_slice(), secret].concat());
    URL_SAFE_NO_PAD.encode(&digest[..9])
}

/// A fresh 256-bit token from the OS CSPRNG, URL-safe.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a token is stored: its SHA-256, never the token itself.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_verifies_and_rotates_keys() {
        let user = UserId::new();
        let old = Tokens::new(
            b"old-secret-old-secret-old-secret",
            &[],
            Tokens::DEFAULT_ACCESS_TTL,
        );
        let token = old.issue_access(user);
        assert_eq!(old.verify_access(&token), Ok(user));
        let new = Tokens::new(
            b"new-secret-new-secret-new-secret",
            &[b"old-secret-old-secret-old-secret".to_vec()],
            Tokens::DEFAULT_ACCESS_TTL,
        );
        assert_eq!(new.verify_access(&token), Ok(user));
        let other = Tokens::new(
            b"another-secret-another-secret!!!",
            &[],
            Tokens::DEFAULT_ACCESS_TTL,
        );
        assert_eq!(other.verify_access(&token), Err(TokenError::Invalid));
        assert_eq!(other.verify_access("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_tokens_fail() {
        let t = Tokens::new(
            b"k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-",
            &[],
            Duration::from_secs(0),
        );
        let mut claims_token = t.issue_access(UserId::new());
        // Re-sign with an exp well in the past.
        let past = Claims {
            sub: Uuid::now_v7(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            typ: ACCESS_TYPE.into(),
            iat: 0,
            exp: 100,
        };
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(t.current_kid.clone());
        claims_token = jsonwebtoken::encode(&h, &past, &t.encoding).unwrap_or(claims_token);
        assert_eq!(t.verify_access(&claims_token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_refresh_token_has_one_successor_that_needs_the_secret() {
        let ttl = Tokens::DEFAULT_ACCESS_TTL;
        let a = Tokens::new(b"one-secret-one-secret-one-secret", &[], ttl);
        let b = Tokens::new(b"two-secret-two-secret-two-secret", &[], ttl);
        let old = random_token();
        assert_eq!(a.refresh_successor(&old), a.refresh_successor(&old));
        assert_ne!(a.refresh_successor(&old), b.refresh_successor(&old));
        assert_ne!(
            a.refresh_successor(&old),
            a.refresh_successor(&random_token())
        );
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(a.refresh_successor(&old))
                .unwrap()
                .len(),
            32
        );
    }

    #[test]
    fn random_tokens_are_256_bits_and_hashes_are_stable() {
        let a = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32);
        assert_ne!(a, random_token());
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 32);
    }
}
