//! Following the log: a subscription reads from a seq on, then new events
//! as they become durable.

use std::time::Duration;

use super::replay::read_entry;
use super::Ledger;
use crate::error::StorageError;
use crate::event::{Entry, Event};

/// Events from a seq on, then new ones as they become durable.
#[derive(Debug)]
pub struct Subscription {
    ledger: Ledger,
    next: u64,
}

impl Subscription {
    /// The seq of the next event it will return.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The next event, waiting up to `timeout` for it to be appended;
    /// `None` when none came, or when the next entry was a control entry
    /// (a pause, a resume), which it passes over ([`next_seq`](Self::next_seq)
    /// then moves on).
    ///
    /// # Errors
    ///
    /// `Corrupt` for a damaged record.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, StorageError> {
        let log = &*self.ledger.inner.log;
        if log.visible() < self.next && log.wait_visible(self.next, timeout) < self.next {
            return Ok(None);
        }
        let entry = read_entry(log, self.next)?;
        self.next += 1;
        match entry {
            Entry::Event(event) => Ok(Some(event)),
            // A control entry is about no execution: passed over (the
            // caller sees the seq move on, as after a wait).
            Entry::Control(_) => Ok(None),
        }
    }
}

impl Iterator for Subscription {
    type Item = Result<Event, StorageError>;

    /// Blocks until the next event is durable.
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.next_timeout(Duration::from_secs(3600)) {
                Ok(Some(e)) => return Some(Ok(e)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Ledger {
    /// Whether other processes share the log (a database, not a directory
    /// one process owns).
    pub(crate) fn shared(&self) -> bool {
        self.inner.log.shared()
    }

    /// Waits up to `timeout` for the log to grow past `seq` (by anyone's
    /// append); returns the last seq readers may see.
    pub(crate) fn wait_appended(&self, seq: u64, timeout: Duration) -> u64 {
        self.inner.log.wait_visible(seq + 1, timeout)
    }

    /// A subscription that reads the events from `from` on and then follows
    /// new ones as they become durable, without gaps or duplicates.
    pub fn subscribe(&self, from: u64) -> Subscription {
        Subscription {
            ledger: self.clone(),
            next: from.max(1),
        }
    }
}
