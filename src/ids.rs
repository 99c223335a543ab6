//! Identifiers: of an execution, of its trigger, of its tenant, and the
//! error for a string that is not one.
//!
//! They serialize as plain strings (the UUID, or the tenant's name), part of
//! the JSON wire contract of [`BackgroundExecution`](crate::BackgroundExecution).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A string that is not a valid id, tenant id, mode or status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseIdError {
    what: &'static str,
    value: String,
}

impl ParseIdError {
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        let mut value = value.to_owned();
        if value.len() > 80 {
            let mut cut = 80;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
            value.push('…');
        }
        ParseIdError { what, value }
    }
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid {}: {:?}", self.what, self.value)
    }
}

impl std::error::Error for ParseIdError {}

/// The identifier of one execution: a UUID v7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExecutionId(Uuid);

impl ExecutionId {
    /// A new, time-ordered id (UUID v7).
    pub fn new() -> Self {
        ExecutionId(Uuid::now_v7())
    }

    /// The id from its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        ExecutionId(Uuid::from_bytes(bytes))
    }

    /// The id's 16 raw bytes, in the order that sorts like the id.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

/// The identifier of the trigger that started an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TriggerId(Uuid);

impl TriggerId {
    /// A new random trigger id.
    pub fn new() -> Self {
        TriggerId(Uuid::new_v4())
    }
}

impl Default for TriggerId {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! uuid_id {
    ($ty:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $ty {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s)
                    .map($ty)
                    .map_err(|_| ParseIdError::new($what, s))
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(ExecutionId, "execution id");
uuid_id!(TriggerId, "trigger id");

/// The tenant an execution belongs to: a name such as `acme`.
///
/// A tenant id is 1 to 128 characters of ASCII letters, digits and `._:-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// The longest tenant id accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// A new random tenant id (`tenant-` and a UUID).
    pub fn new() -> Self {
        TenantId(format!("tenant-{}", Uuid::new_v4().simple()))
    }

    /// The tenant id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Self::is_valid(s) {
            Ok(TenantId(s.to_owned()))
        } else {
            Err(ParseIdError::new("tenant id", s))
        }
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
