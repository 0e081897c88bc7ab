//! Request ids. The host draws 16 random bytes per request; clients and logs
//! see them as `req_` + 32 hex digits (OpenAI's shape), and backends get the
//! same 128 bits as an RFC 9562 version-4 UUID, the only form some inference
//! servers accept in `x-request-id` (llama.cpp's Python server answers 400
//! to anything else). One id, two spellings, mapped one to one.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A new request id (the client's spelling) from 16 random bytes; the
/// version and variant bits are set, so it round-trips through
/// [`upstream_form`] exactly.
pub fn new(random: [u8; 16]) -> String {
    let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
    format!("req_{}", uuid.simple())
}

/// The id sent upstream for the client-facing id `id`: the UUID it spells
/// when it is one of ours (`req_` + 32 hex digits, or a UUID already), else a
/// version-4 UUID derived from its SHA-256, so any id maps to a stable UUID.
pub fn upstream_form(id: &str) -> String {
    let uuid = id
        .strip_prefix("req_")
        .filter(|hex| hex.len() == 32)
        .and_then(|hex| Uuid::try_parse(hex).ok())
        .or_else(|| Uuid::try_parse(id).ok())
        .unwrap_or_else(|| {
            let digest = Sha256::digest(id.as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        });
    uuid.hyphenated().to_string()
}

#[cfg(test)]
// A panic is how a test reports a broken expectation.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_v4(s: &str) -> bool {
        let u = Uuid::try_parse(s).unwrap();
        s.len() == 36 && u.get_version_num() == 4 && u.get_variant() == uuid::Variant::RFC4122
    }

    #[test]
    fn ours_map_to_the_uuid_they_spell() {
        let id = new([0xab; 16]);
        assert_eq!(id.len(), 36);
        assert!(id.starts_with("req_"));
        let up = upstream_form(&id);
        assert!(is_v4(&up), "{up}");
        assert_eq!(up.replace('-', ""), id["req_".len()..]);
    }

    #[test]
    fn foreign_ids_get_a_stable_uuid() {
        for id in ["req-1", "", "req_short", "x".repeat(300).as_str()] {
            let up = upstream_form(id);
            assert!(is_v4(&up), "{id} -> {up}");
            assert_eq!(up, upstream_form(id));
        }
        assert_ne!(upstream_form("a"), upstream_form("b"));
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(upstream_form(uuid), uuid);
    }

    proptest! {
        #[test]
        fn distinct_random_ids_stay_distinct_upstream(a: [u8; 16], b: [u8; 16]) {
            let (ia, ib) = (new(a), new(b));
            prop_assert!(is_v4(&upstream_form(&ia)));
            prop_assert_eq!(ia == ib, upstream_form(&ia) == upstream_form(&ib));
        }
    }
}
