//! An indexed priority queue: higher priority first, then lower order key
//! (submission order), with removal by id. Every operation is O(log n).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use crate::ids::ExecutionId;

type Key = (Reverse<u8>, u64);

/// A priority queue of values keyed by execution id.
#[derive(Clone, Debug)]
pub(crate) struct PriorityQueue<T> {
    order: BTreeMap<Key, (ExecutionId, T)>,
    keys: HashMap<ExecutionId, Key>,
}

impl<T> Default for PriorityQueue<T> {
    fn default() -> Self {
        PriorityQueue {
            order: BTreeMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<T> PriorityQueue<T> {
    /// Adds `value` for `id`, replacing any entry `id` had.
    pub(crate) fn push(&mut self, id: ExecutionId, priority: u8, order: u64, value: T) {
        self.remove(&id);
        let key = (Reverse(priority), order);
        self.keys.insert(id, key);
        self.order.insert(key, (id, value));
    }

    /// Removes and returns the first entry.
    pub(crate) fn pop(&mut self) -> Option<(ExecutionId, T)> {
        let (_, (id, value)) = self.order.pop_first()?;
        self.keys.remove(&id);
        Some((id, value))
    }

    /// The first entry.
    pub(crate) fn peek(&self) -> Option<(ExecutionId, &T)> {
        self.order.first_key_value().map(|(_, (id, v))| (*id, v))
    }

    /// Removes the entry of `id`, if any.
    pub(crate) fn remove(&mut self, id: &ExecutionId) -> Option<T> {
        let key = self.keys.remove(id)?;
        self.order.remove(&key).map(|(_, v)| v)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Ids in pop order.
    pub(crate) fn ids(&self) -> impl Iterator<Item = ExecutionId> + '_ {
        self.order.values().map(|(id, _)| *id)
    }
}
