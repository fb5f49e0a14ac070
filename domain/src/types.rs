//! Values that can only be built valid ("parse, don't validate"). Every
//! string from the network becomes one of these at the transport edge; the
//! rest of IO never re-checks it.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A field that failed to parse: which one and why, so the transport can
/// answer `VALIDATION_ERROR` naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Invalid {
            field,
            message: message.into(),
        }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7), so inserts stay index-friendly.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A user's primary key.
    UserId
);
id_type!(
    /// A chat session's primary key.
    SessionId
);
id_type!(
    /// A message's primary key.
    MessageId
);
id_type!(
    /// A reveal request's primary key.
    RevealId
);
id_type!(
    /// A refresh-token family: every rotation of one sign-in shares it, so a
    /// reused token can revoke the whole chain.
    TokenFamilyId
);

/// A lower-cased, trimmed, plausible email address (≤ 254 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim().to_lowercase();
        let bad = || Invalid::new("email", "must be a valid email address");
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || local.contains('@')
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        {
            return Err(bad());
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// 3–24 characters: ASCII letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Alias(String);

impl Alias {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        let n = s.chars().count();
        if !(3..=24).contains(&n) {
            return Err(Invalid::new("alias", "must be 3 to 24 characters"));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Invalid::new(
                "alias",
                "may contain only letters, digits and _",
            ));
        }
        Ok(Alias(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A playful adjective+noun alias, like the original's spinner.
    pub fn generate() -> Self {
        use rand::seq::SliceRandom;
        use rand::Rng;
        const ADJECTIVES: &[&str] = &[
            "Neon", "Cosmic", "Silent", "Electric", "Velvet", "Midnight", "Lucky", "Wild",
            "Mellow", "Sneaky", "Golden", "Frosty", "Turbo", "Dreamy", "Pixel", "Lunar", "Solar",
            "Misty", "Fuzzy", "Witty", "Brave", "Chill", "Sunny", "Stormy",
        ];
        const NOUNS: &[&str] = &[
            "Panda", "Falcon", "Otter", "Comet", "Fox", "Tiger", "Koala", "Raven", "Nova", "Lynx",
            "Wolf", "Dolphin", "Phoenix", "Badger", "Owl", "Gecko", "Orca", "Yeti", "Moth",
            "Sparrow", "Jaguar", "Mango", "Pebble", "Echo",
        ];
        let mut rng = rand::thread_rng();
        let a = ADJECTIVES.choose(&mut rng).copied().unwrap_or("Neon");
        let n = NOUNS.choose(&mut rng).copied().unwrap_or("Panda");
        let d: u16 = rng.gen_range(10..100);
        Alias(format!("{a}{n}{d}"))
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Dude,
    Girl,
}

impl Gender {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "dude" => Ok(Gender::Dude),
            "girl" => Ok(Gender::Girl),
            _ => Err(Invalid::new("gender", "must be `dude` or `girl`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Gender::Dude => "dude",
            Gender::Girl => "girl",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Gender::Dude => Gender::Girl,
            Gender::Girl => Gender::Dude,
        }
    }
}

/// Whom a user wants to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seeking {
    Dude,
    Girl,
    Any,
}

impl Seeking {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "dude" => Ok(Seeking::Dude),
            "girl" => Ok(Seeking::Girl),
            "any" => Ok(Seeking::Any),
            _ => Err(Invalid::new("seeking", "must be `dude`, `girl` or `any`")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Seeking::Dude => "dude",
            Seeking::Girl => "girl",
            Seeking::Any => "any",
        }
    }

    /// The design's default: the other gender.
    pub fn default_for(gender: Option<Gender>) -> Self {
        match gender {
            Some(Gender::Dude) => Seeking::Girl,
            Some(Gender::Girl) => Seeking::Dude,
            None => Seeking::Any,
        }
    }

    pub fn accepts(self, gender: Gender) -> bool {
        matches!(
            (self, gender),
            (Seeking::Any, _) | (Seeking::Dude, Gender::Dude) | (Seeking::Girl, Gender::Girl)
        )
    }
}

/// A chat rating: 1 Boring, 2 Okay, 3 Fire, 4 Legendary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Rating(u8);

impl Rating {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        if (1..=4).contains(&raw) {
            Ok(Rating(raw as u8))
        } else {
            Err(Invalid::new("rating", "must be 1, 2, 3 or 4"))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    pub fn label(self) -> &'static str {
        match self.0 {
            1 => "boring",
            2 => "okay",
            3 => "fire",
            _ => "legendary",
        }
    }
}

/// Message text: 1–2000 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct MessageContent(String);

/// Characters that show nothing on their own: white space, zero-width and
/// other format characters, fillers. A message of only these is empty.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

impl MessageContent {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        if s.chars().all(invisible) {
            return Err(Invalid::new("content", "must not be empty"));
        }
        if s.chars().count() > Self::MAX_CHARS {
            return Err(Invalid::new("content", "must be at most 2000 characters"));
        }
        // Line breaks and tabs are text; other control characters are not,
        // and Postgres cannot store NUL at all (one such message would fail
        // its whole group commit).
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Invalid::new(
                "content",
                "must not contain control characters",
            ));
        }
        Ok(MessageContent(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The client's idempotency key for a message: 1–64 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(String);

impl ClientMsgId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.chars().count() > 64 || raw.chars().any(|c| c.is_control()) {
            return Err(Invalid::new(
                "clientMsgId",
                "must be 1 to 64 printable characters",
            ));
        }
        Ok(ClientMsgId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free text of the identity card, bounded so a profile stays small.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CardText(String);

impl CardText {
    /// `max` characters after trimming; empty means "not set".
    pub fn parse(field: &'static str, raw: &str, max: usize) -> Result<Option<Self>, Invalid> {
        let s = raw.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if s.chars().count() > max {
            return Err(Invalid::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Invalid::new(field, "must not contain control characters"));
        }
        Ok(Some(CardText(s.to_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A gateway node's name in presence, inbox keys, logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A matcher leader's fencing token: strictly increasing across leaders, so
/// the store can refuse a write from a leader that has been replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FencingToken(pub i64);

/// Wall-clock time as the domain sees it.
pub type Timestamp = DateTime<Utc>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
        assert_eq!(Email::parse("a@b.co").unwrap().domain(), "b.co");
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a b@c.de", "a@b..co", "a@b.co.",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn alias_rules() {
        assert!(Alias::parse("ab").is_err());
        assert!(Alias::parse("abc").is_ok());
        assert!(Alias::parse(&"a".repeat(25)).is_err());
        assert!(Alias::parse("no spaces").is_err());
        assert!(Alias::parse("émile").is_err());
        for _ in 0..100 {
            let a = Alias::generate();
            assert_eq!(Alias::parse(a.as_str()).unwrap(), a);
        }
    }

    #[test]
    fn content_is_trimmed_and_bounded_in_characters() {
        assert!(MessageContent::parse("   ").is_err());
        assert!(MessageContent::parse("\u{200B}\u{FEFF} \u{3164}").is_err());
        assert!(MessageContent::parse("\u{2066}\u{FE0F}\u{2800}\u{E0041}").is_err());
        assert!(MessageContent::parse("👩\u{200D}💻").is_ok());
        assert_eq!(MessageContent::parse(" hi ").unwrap().as_str(), "hi");
        assert!(MessageContent::parse(&"é".repeat(2000)).is_ok());
        assert!(MessageContent::parse(&"é".repeat(2001)).is_err());
        assert!(MessageContent::parse("a\u{0}b").is_err());
        assert!(MessageContent::parse("bell\u{7}").is_err());
        assert!(MessageContent::parse("two\r\nlines\tand a tab").is_ok());
    }

    #[test]
    fn rating_and_seeking() {
        assert!(Rating::parse(0).is_err());
        assert!(Rating::parse(5).is_err());
        assert_eq!(Rating::parse(4).unwrap().label(), "legendary");
        assert!(Seeking::Any.accepts(Gender::Girl));
        assert!(!Seeking::Dude.accepts(Gender::Girl));
        assert_eq!(Seeking::default_for(Some(Gender::Dude)), Seeking::Girl);
    }
}
