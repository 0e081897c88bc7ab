//! Exact-match response cache keyed by the core's cache key: entries expire
//! after their TTL, and the least recently used go first when the total size
//! passes the bound.

use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The upstream's JSON body.
    pub body: Bytes,
}

struct Entry {
    value: CachedResponse,
    expires: Instant,
    /// Position in the recency order.
    tick: u64,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// tick → key, oldest first.
    recency: BTreeMap<u64, String>,
    next_tick: u64,
    bytes: usize,
}

pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl ResponseCache {
    pub fn new(max_bytes: usize) -> Self {
        ResponseCache {
            max_bytes,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                recency: BTreeMap::new(),
                next_tick: 0,
                bytes: 0,
            }),
        }
    }

    pub fn get(&self, key: &str) -> Option<CachedResponse> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let expired = inner.entries.get(key)?.expires <= now;
        if expired {
            inner.remove(key);
            return None;
        }
        let tick = inner.bump();
        let entry = inner.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let value = entry.value.clone();
        inner.recency.remove(&old);
        inner.recency.insert(tick, key.to_owned());
        Some(value)
    }

    pub fn put(&self, key: String, value: CachedResponse, ttl: Duration) {
        let size = entry_size(&key, &value);
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.remove(&key);
        let tick = inner.bump();
        inner.bytes += size;
        inner.recency.insert(tick, key.clone());
        inner.entries.insert(
            key,
            Entry {
                value,
                expires: Instant::now() + ttl,
                tick,
            },
        );
        while inner.bytes > self.max_bytes {
            let Some((_, oldest)) = inner.recency.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.recency.remove(&e.tick);
            self.bytes -= entry_size(key, &e.value);
        }
    }
}

fn entry_size(key: &str, value: &CachedResponse) -> usize {
    key.len() + value.body.len() + 64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> CachedResponse {
        CachedResponse {
            body: Bytes::from(vec![b'x'; n]),
        }
    }

    #[test]
    fn evicts_least_recently_used_past_the_size_bound() {
        let cache = ResponseCache::new(3 * (1 + 100 + 64));
        for k in ["a", "b", "c"] {
            cache.put(k.into(), value(100), Duration::from_secs(60));
        }
        assert!(cache.get("a").is_some(), "a is now the most recent");
        cache.put("d".into(), value(100), Duration::from_secs(60));
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some() && cache.get("d").is_some());
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn entries_expire() {
        let cache = ResponseCache::new(1 << 20);
        cache.put("a".into(), value(1), Duration::from_millis(0));
        assert!(cache.get("a").is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn oversized_entries_are_not_stored() {
        let cache = ResponseCache::new(100);
        cache.put("a".into(), value(1_000), Duration::from_secs(1));
        assert_eq!(cache.len(), 0);
    }
}
