//! Reading what a client or an operator wrote — request bodies, query
//! strings, the keys file — refusing any field the reader would ignore,
//! and saying what is wrong in the client's own words: the field's path as
//! written (`config.priority`) and what it takes, never a Rust type.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a document was refused: one line naming the field.
#[derive(Debug)]
pub(crate) struct Refused {
    /// What kind of refusal.
    pub(crate) kind: RefusedKind,
    /// The line for the client.
    pub(crate) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RefusedKind {
    /// Not JSON at all.
    Syntax,
    /// A field of the wrong type or value, or a missing one.
    Field,
    /// A field the reader does not know.
    Unknown,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// What a field takes, by its path (`[]` for any array index, `*` for
/// any key of a map), in the words of the messages.
fn takes(path: &str) -> Option<&'static str> {
    // A batch's submissions take what a submission takes; a retention
    // pass's policy what a policy file does.
    let path = path.strip_prefix("executions[].").unwrap_or(path);
    let path = path.strip_prefix("policy.").unwrap_or(path);
    Some(match path {
        "." => "a JSON object",
        // Batch submissions (`POST /v1/executions/batch`).
        "executions" => "an array of submissions (at most 1,000)",
        "executions[]" => "a submission (an object)",
        // Submissions (`POST /v1/executions`).
        "callableName"
        | "input"
        | "idempotencyKey"
        | "config.callbackUrl"
        | "config.targetBinding.target"
        | "config.targetBinding.path"
        | "context.*" => "a string",
        "tenantId" | "keys[].tenant" => "a tenant id (1-128 letters, digits and ._:-)",
        "context" => "an object of strings",
        "metadata" | "config" | "config.targetBinding" | "config.retry" => "an object",
        "config.mode" => "fire_and_forget, silent or deferred",
        "config.priority" => "an integer 0-255",
        "config.timeoutMs" | "config.retry.initialDelayMs" | "config.retry.maxDelayMs" => {
            "a whole number of milliseconds"
        }
        "config.retry.maxAttempts" => "a whole number of attempts",
        "config.retry.backoffMultiplier" => "a number",
        "triggerId" => "a UUID",
        "runAt" | "atTime" => "an RFC 3339 time",
        // Cancel.
        "reason" => "a string or null",
        // The worker protocol.
        "worker" => "a worker name (a string of 1-256 bytes)",
        "callables" => "an array of callable names",
        "callables[]" => "a callable name (a string)",
        "max" => "a whole number 1-100",
        "waitMs" => "a whole number of milliseconds (at most 60000)",
        "leaseMs" => "a whole number of milliseconds (100-3600000)",
        "error" => "an object with code and message",
        "error.code" | "error.message" => "a string",
        "retryable" => "true or false",
        "output" | "progress" | "error.details" => "any JSON value",
        // Query strings.
        "atSeq" | "fromSeq" | "toSeq" => "a whole number",
        "wait" => "a duration like 30s or 500ms",
        // A head kept elsewhere (`verify --checkpoint`).
        "seq" => "a whole number",
        "hash" => "64 hex digits",
        // Retention policies (`ledger retain`, `POST /v1/retention`).
        "policy" | "tenants" => "an object of tenants' retention",
        "tenants.*" | "default" => "an object with redactAfter, archiveAfter and hold",
        "tenants.*.redactAfter"
        | "default.redactAfter"
        | "tenants.*.archiveAfter"
        | "default.archiveAfter" => {
            "a span: a whole number and s, m, h or d (at most 999999999s, 9999999m, 999999h, 99999d)"
        }
        "tenants.*.hold" | "default.hold" => "a string of at most 4096 characters (why)",
        "dryRun" => "true or false",
        // A tenant's share (`PUT /v1/tenants/{tenant}/share`); a list's
        // page size.
        "weight" => "a whole number from 1 to 100",
        "limit" => "a whole number, or null",
        // The callback secrets (`--callback-secrets`).
        "secrets" => "an object of each tenant's secrets (\"*\": of the tenants not named)",
        "secrets.*" => "an array of 1 to 4 secrets",
        "secrets.*[]" => "a secret (a string of 16 bytes or more)",
        // The keys file.
        "keys" => "an array of keys",
        "keys[]" => "an object",
        "keys[].admin" => "true or false",
        "keys[].sha256" => "the key's SHA-256 (64 hex digits)",
        _ => return None,
    })
}

/// Parses `what` (`the body`, `the file`), a JSON object, into `T`,
/// refusing unknown fields anywhere in it.
pub(crate) fn json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Refused> {
    value(&json_object(bytes, what)?)
}

/// Parses `what`, which must be a JSON object, without looking at its
/// fields.
pub(crate) fn json_object(bytes: &[u8], what: &str) -> Result<Value, Refused> {
    let syntax = |message| Refused {
        kind: RefusedKind::Syntax,
        message,
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(syntax(format!("{what} is empty: it takes a JSON object")));
    }
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| syntax(format!("{what} is not valid JSON: {e}")))?;
    let repeated = repeated_keys(bytes);
    if !repeated.is_empty() {
        return Err(Refused {
            kind: RefusedKind::Field,
            message: repeated
                .iter()
                .map(|p| format!("{p}: given more than once"))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    if !doc.is_object() {
        return Err(Refused {
            kind: RefusedKind::Field,
            message: format!("{what} must be a JSON object, not {}", output_value(&doc)),
        });
    }
    Ok(doc)
}

/// The paths of the keys that a JSON document's objects name more than
/// once (a parsed document keeps only the last of them).
fn repeated_keys(bytes: &[u8]) -> Vec<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::cell::RefCell;

    struct Walk<'a> {
        path: String,
        found: &'a RefCell<Vec<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                    found: self.found,
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = join(&self.path, &key);
                if !seen.insert(key) {
                    self.found.borrow_mut().push(path.clone());
                }
                map.next_value_seed(Walk {
                    path,
                    found: self.found,
                })?;
            }
            Ok(())
        }
    }

    let found = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walk = Walk {
        path: String::new(),
        found: &found,
    };
    // The document parsed already; this walk only looks at its keys.
    let _ = walk.deserialize(&mut de);
    found.into_inner()
}

/// Reads `T` from a parsed JSON document, refusing unknown fields
/// anywhere in it (nested ones too).
pub(crate) fn value<T: DeserializeOwned>(doc: &Value) -> Result<T, Refused> {
    value_at(doc, "")
}

/// [`value`] for the field `prefix` of a larger document (`""` for the
/// whole document): messages name the field's full path.
pub(crate) fn value_at<T: DeserializeOwned>(doc: &Value, prefix: &str) -> Result<T, Refused> {
    let mut unknown = Vec::new();
    let read = {
        let mut note = |p: serde_ignored::Path| unknown.push(join(prefix, &ignored_path(&p)));
        let ignoring = serde_ignored::Deserializer::new(doc, &mut note);
        serde_path_to_error::deserialize::<_, T>(ignoring)
    };
    match read {
        Err(e) => {
            let path = join(prefix, &error_path(e.path()));
            let here = lookup(doc, e.path());
            Err(field_error(&path, &e.into_inner().to_string(), || {
                here.map(output_value)
            }))
        }
        Ok(_) if !unknown.is_empty() => Err(unknown_fields(&unknown)),
        Ok(t) => Ok(t),
    }
}

/// Reads `T` from a query string (`a=1&b=2`), refusing unknown keys.
pub(crate) fn query<T: DeserializeOwned>(query: &str) -> Result<T, Refused> {
    let mut unknown = Vec::new();
    let read = {
        let parsed = form_urlencoded::parse(query.as_bytes());
        let mut note = |p: serde_ignored::Path| unknown.push(ignored_path(&p));
        let ignoring = serde_ignored::Deserializer::new(
            serde_urlencoded::Deserializer::new(parsed),
            &mut note,
        );
        serde_path_to_error::deserialize::<_, T>(ignoring)
    };
    match read {
        Err(e) => {
            let path = error_path(e.path());
            let given = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| *k == path)
                .map(|(_, v)| format!("{:?}", crate::output::clip(&v, 60)));
            Err(field_error(&path, &e.into_inner().to_string(), || given))
        }
        Ok(_) if !unknown.is_empty() => Err(unknown_fields(&unknown)),
        Ok(t) => Ok(t),
    }
}

/// The message for a field that failed to read: what it takes and what was
/// given. `inner` is the reader's own message, used only to tell a missing
/// or repeated field from a bad value.
fn field_error(path: &str, inner: &str, given: impl FnOnce() -> Option<String>) -> Refused {
    let refused = |message| Refused {
        kind: RefusedKind::Field,
        message,
    };
    let quoted = |prefix: &str| {
        inner
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned)
    };
    let parent = if path == "." { "" } else { path };
    if let Some(name) = quoted("missing field `") {
        let field = join(parent, &name);
        let what = takes(&pattern(&field)).unwrap_or("a value");
        return refused(format!("{field}: missing ({what})"));
    }
    if let Some(name) = quoted("duplicate field `") {
        return refused(format!("{}: given more than once", join(parent, &name)));
    }
    let what = takes(&pattern(path));
    let message = match (path, what, given()) {
        (_, Some(what), Some(v)) => format!("{path}: must be {what}, not {v}"),
        (_, Some(what), None) => format!("{path}: must be {what}"),
        (_, None, Some(v)) => format!("{path}: not a valid value: {v}"),
        (_, None, None) => format!("{path}: not a valid value"),
    };
    refused(message)
}

fn unknown_fields(paths: &[String]) -> Refused {
    Refused {
        kind: RefusedKind::Unknown,
        message: paths
            .iter()
            .map(|p| format!("{p}: unknown field"))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// `a.b` from `a` and `b`; either may be empty.
fn join(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        ("", p) | (p, "") | (p, ".") => p.to_owned(),
        (a, b) => format!("{a}.{b}"),
    }
}

/// The table key of a path: indices as `[]`, a map's keys as `*`.
fn pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    for map in ["context.", "metadata."] {
        if out.starts_with(map) {
            return format!("{map}*");
        }
    }
    // A map of tenants: the key is any tenant.
    if let Some(rest) = out.strip_prefix("secrets.") {
        let after_key = rest.find('[').map_or("", |i| &rest[i..]);
        return format!("secrets.*{after_key}");
    }
    out
}

fn ignored_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => join(&ignored_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
                out = join(&out, key);
            }
            Segment::Unknown => out = join(&out, "?"),
        }
    }
    if out.is_empty() {
        ".".into()
    } else {
        out
    }
}

/// The part of `doc` at `path`, when there is one.
fn lookup<'v>(doc: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(doc, |v, segment| match segment {
        Segment::Seq { index } => v.get(index),
        Segment::Map { key } | Segment::Enum { variant: key } => v.get(key),
        Segment::Unknown => None,
    })
}

/// A value as the client wrote it, shortened.
fn output_value(v: &Value) -> String {
    crate::output::clip(&v.to_string(), 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Q {
        at_seq: Option<u64>,
    }

    #[test]
    fn paths_and_values_in_the_clients_words() {
        let e = query::<Q>("atSeq=x").unwrap_err();
        assert_eq!(e.message, "atSeq: must be a whole number, not \"x\"");
        let e = query::<Q>("atSeq=1&atSeq=2").unwrap_err();
        assert_eq!(e.message, "atSeq: given more than once");
        let e = query::<Q>("atseq=1").unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (RefusedKind::Unknown, "atseq: unknown field")
        );
        assert_eq!(pattern("keys[12].sha256"), "keys[].sha256");
        assert_eq!(pattern("context.any.thing"), "context.*");
    }
}
