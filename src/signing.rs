//! Signed callbacks: every callback carries `Ledger-Signature: t=…,v1=…`,
//! an HMAC-SHA256 over `"{t}.{body}"` with the tenant's secret, in the form
//! payment providers use for their webhooks.
//!
//! A tenant may have two secrets (or more) at once: each delivery is signed
//! with every one of them (one `v1=` each), so a receiver that knows either
//! accepts it. Rotating is then: add the new secret beside the old, move the
//! receiver to the new one, remove the old — no delivery goes unverifiable.
//!
//! [`CallbackSecrets`] is a shared handle: a process replaces the secrets
//! while it runs and the next delivery is signed with the new ones.
//! [`verify_callback`] is what a receiver in Rust calls.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ids::TenantId;
use crate::store::record;

/// The header that carries the signature: `t=UNIX_SECONDS,v1=HEX[,v1=HEX]`.
pub const SIGNATURE_HEADER: &str = "Ledger-Signature";

/// The header that carries the id a receiver de-duplicates on: the
/// execution's id, the same on every delivery attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// The header that carries the delivery attempt (1 and on).
pub const ATTEMPT_HEADER: &str = "Ledger-Delivery-Attempt";

/// How old a signature [`verify_callback`] accepts by default: five
/// minutes, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The fewest bytes a secret has.
pub const MIN_SECRET_BYTES: usize = 16;

/// The most secrets one tenant has at once.
pub const MAX_SECRETS: usize = 4;

/// The secrets callbacks are signed with, by tenant, with an optional
/// default for tenants not named. Clones share the secrets: what one
/// replaces, all see.
#[derive(Clone, Default)]
pub struct CallbackSecrets {
    inner: Arc<RwLock<Secrets>>,
}

#[derive(Default)]
struct Secrets {
    tenants: HashMap<TenantId, Vec<Vec<u8>>>,
    default: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CallbackSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        let s = self.read();
        f.debug_struct("CallbackSecrets")
            .field("tenants", &s.tenants.len())
            .field("default", &!s.default.is_empty())
            .finish()
    }
}

/// Why a set of secrets is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// A secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("{owner}: a secret takes at least {MIN_SECRET_BYTES} bytes, not {len}")]
    TooShort {
        /// Whose secret: `tenant NAME` or `default`.
        owner: String,
        /// Its length.
        len: usize,
    },
    /// No secret, or more than [`MAX_SECRETS`].
    #[error("{owner}: takes 1 to {MAX_SECRETS} secrets, not {count}")]
    Count {
        /// Whose secrets: `tenant NAME` or `default`.
        owner: String,
        /// How many were given.
        count: usize,
    },
}

fn checked(
    owner: impl FnOnce() -> String,
    secrets: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, SecretsError> {
    if secrets.is_empty() || secrets.len() > MAX_SECRETS {
        return Err(SecretsError::Count {
            owner: owner(),
            count: secrets.len(),
        });
    }
    if let Some(short) = secrets.iter().find(|s| s.len() < MIN_SECRET_BYTES) {
        return Err(SecretsError::TooShort {
            owner: owner(),
            len: short.len(),
        });
    }
    Ok(secrets)
}

impl CallbackSecrets {
    /// No secrets yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Secrets> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every secret at once: `tenants`' own, and the `default` for
    /// tenants not named (empty: none). Nothing changes when one is refused.
    ///
    /// # Errors
    /// A tenant with no secret or more than [`MAX_SECRETS`], or a secret
    /// shorter than [`MIN_SECRET_BYTES`].
    pub fn replace<S: Into<Vec<u8>>>(
        &self,
        tenants: impl IntoIterator<Item = (TenantId, Vec<S>)>,
        default: Vec<S>,
    ) -> Result<(), SecretsError> {
        let mut next = Secrets::default();
        for (tenant, secrets) in tenants {
            let secrets = secrets.into_iter().map(Into::into).collect();
            let secrets = checked(|| format!("tenant {tenant}"), secrets)?;
            next.tenants.insert(tenant, secrets);
        }
        let default: Vec<Vec<u8>> = default.into_iter().map(Into::into).collect();
        if !default.is_empty() {
            next.default = checked(|| "default".to_owned(), default)?;
        }
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// Sets one tenant's secrets (the first is the newest), keeping the rest.
    ///
    /// # Errors
    /// As [`CallbackSecrets::replace`].
    pub fn set<S: Into<Vec<u8>>>(
        &self,
        tenant: TenantId,
        secrets: Vec<S>,
    ) -> Result<(), SecretsError> {
        let secrets = secrets.into_iter().map(Into::into).collect();
        let secrets = checked(|| format!("tenant {tenant}"), secrets)?;
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .tenants
            .insert(tenant, secrets);
        Ok(())
    }

    /// The `Ledger-Signature` value for `body` sent at `at` for `tenant`:
    /// one `v1=` per secret the tenant has (its own, else the default);
    /// `None` when it has none.
    pub fn sign(&self, tenant: &TenantId, at: DateTime<Utc>, body: &[u8]) -> Option<String> {
        let s = self.read();
        let secrets = s.tenants.get(tenant).unwrap_or(&s.default);
        if secrets.is_empty() {
            return None;
        }
        let t = at.timestamp();
        let mut header = format!("t={t}");
        for secret in secrets {
            header.push_str(",v1=");
            let signature: [u8; 32] = mac(secret, t, body).finalize().into_bytes().into();
            header.push_str(&record::hex(&signature));
        }
        Some(header)
    }
}

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Why a callback's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=UNIX_SECONDS,v1=HEX[,v1=HEX…]`.
    #[error("the Ledger-Signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is further from now than the tolerance.
    #[error("the signature is {age_secs} s from now, more than the {tolerance_secs} s accepted")]
    Stale {
        /// How far the timestamp is from now, in seconds.
        age_secs: u64,
        /// The tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// No `v1=` matches the body under any of the secrets.
    #[error("no signature matches the body under the secrets given")]
    Mismatch,
}

/// Checks a callback as its receiver got it: `header` (the
/// `Ledger-Signature` value), the raw `body`, the `secrets` the receiver
/// accepts (two during a rotation), `now` and how far from it the
/// timestamp may be. Returns the signature's time.
///
/// # Errors
/// A malformed header, a timestamp out of `tolerance`, or no signature that
/// matches (a tampered body, a wrong secret).
pub fn verify_callback<S: AsRef<[u8]>>(
    header: &str,
    body: &[u8],
    secrets: &[S],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<DateTime<Utc>, SignatureError> {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) if t.is_none() => {
                t = Some(
                    v.parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number of seconds"))?,
                );
            }
            Some(("t", _)) => return Err(SignatureError::Malformed("t is given twice")),
            Some(("v1", v)) => {
                signatures.push(
                    record::from_hex(v)
                        .ok_or(SignatureError::Malformed("a v1 is not 64 hex digits"))?,
                );
            }
            // Other schemes are for other versions: skipped, as a
            // receiver of a newer sender should.
            Some(_) => {}
            None => return Err(SignatureError::Malformed("each part is key=value")),
        }
    }
    let t = t.ok_or(SignatureError::Malformed("t is missing"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let at = DateTime::<Utc>::from_timestamp(t, 0)
        .ok_or(SignatureError::Malformed("t is out of range"))?;
    let age = now.signed_duration_since(at).num_seconds().unsigned_abs();
    if age > tolerance.as_secs() {
        return Err(SignatureError::Stale {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    for secret in secrets {
        for signature in &signatures {
            // verify_slice compares in constant time.
            if mac(secret.as_ref(), t, body)
                .verify_slice(signature)
                .is_ok()
            {
                return Ok(at);
            }
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> TenantId {
        "acme".parse().unwrap()
    }

    #[test]
    fn a_signature_verifies_under_each_of_its_secrets_and_nothing_else() {
        let secrets = CallbackSecrets::new();
        secrets
            .set(
                acme(),
                vec!["new-secret-0123456789", "old-secret-0123456789"],
            )
            .unwrap();
        let now = Utc::now();
        let header = secrets.sign(&acme(), now, b"{\"a\":1}").unwrap();
        assert_eq!(header.matches("v1=").count(), 2);
        for one in ["new-secret-0123456789", "old-secret-0123456789"] {
            verify_callback(&header, b"{\"a\":1}", &[one], now, DEFAULT_TOLERANCE).unwrap();
        }
        assert_eq!(
            verify_callback(
                &header,
                b"{\"a\":2}",
                &["new-secret-0123456789"],
                now,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_callback(
                &header,
                b"{\"a\":1}",
                &["another-secret-0123"],
                now,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::seconds(301);
        assert!(matches!(
            verify_callback(
                &header,
                b"{\"a\":1}",
                &["new-secret-0123456789"],
                later,
                DEFAULT_TOLERANCE
            ),
            Err(SignatureError::Stale { age_secs: 301, .. })
        ));
        assert_eq!(secrets.sign(&"other".parse().unwrap(), now, b""), None);
    }

    #[test]
    fn malformed_headers_and_weak_secrets_are_refused() {
        let now = Utc::now();
        for header in [
            "",
            "v1=00",
            "t=x,v1=00",
            "t=1,t=2,v1=00",
            "t=1",
            "t=1,v1=zz",
            "t=1,junk",
        ] {
            assert!(
                matches!(
                    verify_callback(header, b"", &["k"], now, DEFAULT_TOLERANCE),
                    Err(SignatureError::Malformed(_))
                ),
                "{header}"
            );
        }
        let secrets = CallbackSecrets::new();
        assert!(matches!(
            secrets.set(acme(), vec!["short"]),
            Err(SecretsError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            secrets.set(acme(), Vec::<String>::new()),
            Err(SecretsError::Count { count: 0, .. })
        ));
        secrets
            .replace(
                Vec::<(TenantId, Vec<String>)>::new(),
                vec!["default-secret-0123".to_owned()],
            )
            .unwrap();
        assert!(
            secrets.sign(&acme(), now, b"").is_some(),
            "the default signs for tenants not named"
        );
    }
}
