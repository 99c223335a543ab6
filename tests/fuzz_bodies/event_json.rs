//! `event_json`: arbitrary bytes to the `Event` JSON decoder.
//!
//! Whatever decodes must encode, and the encoding must decode to an equal
//! event: an event read from the log, a subscription or the HTTP API and
//! written again must not change on the way.

use execution_ledger::Event;
use serde_json::Value;

/// Decodes `data` as an event; a decoded event must survive a round trip.
pub fn event_json(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<Event>(data) else {
        return;
    };
    let text = serde_json::to_vec(&event).expect("a decoded event encodes");
    let shown = || String::from_utf8_lossy(&text).into_owned();
    let back: Event = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("the encoding does not decode ({e}): {}", shown()));
    assert_eq!(back, event, "the round trip changed the event: {}", shown());
    // Encoding is a function of the value (maps may list their keys in
    // another order, which JSON does not count as a difference).
    let again = serde_json::to_vec(&back).expect("encodes");
    let as_value = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).expect("valid JSON");
    assert_eq!(as_value(&again), as_value(&text), "{}", shown());
}
