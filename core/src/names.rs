//! Names that become parts of store keys: tenant ids, region and replica
//! names. A quota object is named by its tenant (`acme`, or `acme#1` for a
//! shard), a gate by its region (`us-east`, or `us-east#0`), so a name
//! holding `#` could share a store with another's shard. Names are checked
//! where they enter (the config, a token's claims, a key record), and keys
//! are typed ([`ShardedName`]) until a host needs the store's name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A name is at most this long.
pub const MAX_NAME_CHARS: usize = 128;

/// What a valid name is, for error messages.
pub const NAME_RULE: &str = "must be 1 to 128 of A-Z a-z 0-9 - _ . : @ (no `#`, `/` or spaces, which could make two names one store key)";

/// Whether `name` may be part of a store key.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@'))
}

/// A store named by a checked name, or by one shard of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardedName {
    pub name: String,
    pub shard: Option<u32>,
}

impl ShardedName {
    pub fn whole(name: &str) -> ShardedName {
        ShardedName {
            name: name.to_owned(),
            shard: None,
        }
    }

    /// Shard `shard` of `shards`; the whole name when there is one.
    pub fn shard(name: &str, shard: u32, shards: u32) -> ShardedName {
        ShardedName {
            name: name.to_owned(),
            shard: (shards > 1).then_some(shard),
        }
    }

    /// Every shard of a name split in `shards`.
    pub fn all(name: &str, shards: u32) -> Vec<ShardedName> {
        (0..shards.max(1))
            .map(|k| ShardedName::shard(name, k, shards))
            .collect()
    }

    /// The store's name back from [`fmt::Display`]'s form (`name` or
    /// `name#k`); `None` for anything else.
    pub fn parse(text: &str) -> Option<ShardedName> {
        match text.rsplit_once('#') {
            None => is_valid(text).then(|| ShardedName::whole(text)),
            Some((name, k)) => {
                let shard = k.parse().ok().filter(|_| !k.starts_with('+'))?;
                is_valid(name).then(|| ShardedName {
                    name: name.to_owned(),
                    shard: Some(shard),
                })
            }
        }
    }
}

/// The store's name: `name`, or `name#k` for shard k.
impl fmt::Display for ShardedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shard {
            None => f.write_str(&self.name),
            Some(k) => write!(f, "{}#{k}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_collide_are_refused() {
        for good in ["acme", "org:42", "a.b-c_d", "user@example.com"] {
            assert!(is_valid(good), "{good}");
        }
        let long = "x".repeat(MAX_NAME_CHARS + 1);
        for bad in ["", "acme#1", "a/b", "a b", "ümlaut", "tab\t", long.as_str()] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn a_store_name_reads_back_as_its_key() {
        for key in [
            ShardedName::whole("acme"),
            ShardedName::shard("acme", 1, 4),
            ShardedName::shard("acme", 0, 1),
        ] {
            assert_eq!(ShardedName::parse(&key.to_string()), Some(key));
        }
        assert_eq!(ShardedName::shard("acme", 3, 1).to_string(), "acme");
        assert_eq!(ShardedName::all("acme", 2)[1].to_string(), "acme#1");
        for bad in ["acme#", "acme#x", "a#b#1", "#1", "acme#+1"] {
            assert_eq!(ShardedName::parse(bad), None, "{bad}");
        }
    }
}
