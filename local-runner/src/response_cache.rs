//! Exact-match response cache keyed by the core's cache key, on `moka`:
//! each entry expires after its own TTL (the core's, per route), and the
//! least recently used go first once the entries' total size passes the
//! bound (`--cache-mb`). Reads take no lock shared with writers.

use bytes::Bytes;
use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The upstream's JSON body.
    pub body: Bytes,
}

#[derive(Debug, Clone)]
struct Entry {
    value: CachedResponse,
    ttl: Duration,
}

/// Each entry lives its own TTL from when it was stored.
struct OwnTtl;

impl Expiry<String, Entry> for OwnTtl {
    fn expire_after_create(&self, _: &String, entry: &Entry, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct ResponseCache {
    entries: Cache<String, Entry>,
    max_bytes: usize,
}

impl ResponseCache {
    pub fn new(max_bytes: usize) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes as u64)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(entry_size(key, &entry.value)).unwrap_or(u32::MAX)
            })
            .expire_after(OwnTtl)
            .eviction_policy(EvictionPolicy::lru())
            .build();
        ResponseCache { entries, max_bytes }
    }

    pub fn get(&self, key: &str) -> Option<CachedResponse> {
        self.entries.get(key).map(|entry| entry.value)
    }

    pub fn put(&self, key: String, value: CachedResponse, ttl: Duration) {
        if entry_size(&key, &value) > self.max_bytes || ttl.is_zero() {
            return;
        }
        self.entries.insert(key, Entry { value, ttl });
    }
}

/// What an entry counts against the bound: its key and body, and 64 bytes
/// for its bookkeeping.
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

    fn len(cache: &ResponseCache) -> u64 {
        cache.entries.run_pending_tasks();
        cache.entries.entry_count()
    }

    #[test]
    fn evicts_least_recently_used_past_the_size_bound() {
        let cache = ResponseCache::new(3 * (1 + 100 + 64));
        for k in ["a", "b", "c"] {
            cache.put(k.into(), value(100), Duration::from_secs(60));
        }
        cache.entries.run_pending_tasks();
        assert!(cache.get("a").is_some(), "a is now the most recent");
        cache.put("d".into(), value(100), Duration::from_secs(60));
        cache.entries.run_pending_tasks();
        assert!(cache.get("b").is_none(), "b was least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some() && cache.get("d").is_some());
        assert_eq!(len(&cache), 3);
    }

    #[test]
    fn entries_expire_after_their_own_ttl() {
        let cache = ResponseCache::new(1 << 20);
        cache.put("gone".into(), value(1), Duration::ZERO);
        cache.put("short".into(), value(1), Duration::from_millis(50));
        cache.put("long".into(), value(1), Duration::from_secs(60));
        assert!(cache.get("gone").is_none());
        assert!(cache.get("short").is_some());
        std::thread::sleep(Duration::from_millis(120));
        assert!(cache.get("short").is_none(), "past its TTL");
        assert!(cache.get("long").is_some());
    }

    #[test]
    fn oversized_entries_are_not_stored() {
        let cache = ResponseCache::new(100);
        cache.put("a".into(), value(1_000), Duration::from_secs(1));
        assert_eq!(len(&cache), 0);
    }
}
