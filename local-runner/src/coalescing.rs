//! Request coalescing: a cache miss that arrives while an identical
//! request (the same cache key) is in flight waits for that request's answer
//! instead of calling the backend again. The first to miss leads; its
//! answer, when it stores one, goes to everyone waiting; when it ends
//! without one, they are told so and call the backend themselves.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

type Waiters = Vec<oneshot::Sender<Option<Bytes>>>;

#[derive(Default)]
pub struct Coalescing {
    in_flight: Mutex<HashMap<String, Waiters>>,
}

/// What a miss does: lead (call the backend), or wait for the leader.
pub enum Turn {
    Lead(Lead),
    Follow(oneshot::Receiver<Option<Bytes>>),
}

/// The request that calls the backend for a key; dropping it without
/// [`Lead::publish`] tells the waiters there is no answer.
pub struct Lead {
    coalescing: Arc<Coalescing>,
    key: String,
    published: bool,
}

impl Coalescing {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Waiters>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn join(self: &Arc<Self>, key: &str) -> Turn {
        let mut map = self.map();
        if let Some(waiters) = map.get_mut(key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Turn::Follow(rx);
        }
        map.insert(key.to_owned(), Vec::new());
        Turn::Lead(Lead {
            coalescing: self.clone(),
            key: key.to_owned(),
            published: false,
        })
    }

    fn finish(&self, key: &str, answer: Option<&Bytes>) {
        let waiters = self.map().remove(key).unwrap_or_default();
        for w in waiters {
            let _ = w.send(answer.cloned());
        }
    }
}

impl Lead {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The answer, for everyone waiting.
    pub fn publish(mut self, answer: &Bytes) {
        self.coalescing.finish(&self.key, Some(answer));
        self.published = true;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if !self.published {
            self.coalescing.finish(&self.key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_answer_or_its_absence() {
        let c = Arc::new(Coalescing::default());
        let Turn::Lead(lead) = c.join("k") else {
            panic!("the first leads");
        };
        let Turn::Follow(a) = c.join("k") else {
            panic!("the second follows");
        };
        let Turn::Follow(b) = c.join("k") else {
            panic!("the third follows");
        };
        lead.publish(&Bytes::from_static(b"answer"));
        assert_eq!(a.await.expect("sent").as_deref(), Some(&b"answer"[..]));
        assert_eq!(b.await.expect("sent").as_deref(), Some(&b"answer"[..]));
        // The key is free again; a leader that ends without an answer says so.
        let Turn::Lead(lead) = c.join("k") else {
            panic!("leads again");
        };
        let Turn::Follow(f) = c.join("k") else {
            panic!("follows");
        };
        drop(lead);
        assert_eq!(f.await.expect("sent"), None);
    }
}
