//! Idempotency keys (`Idempotency-Key`) of create and logout: what a client
//! sends, what the store keeps of it, and the answer a retry gets.
//!
//! The store keeps a key only as a digest of the tenant and the key
//! ([`OnceKey::id`]) and records it in the same atomic step as the write it
//! guards, so a write that the store ran after the host gave up on it
//! (`outcome-unknown`) is found by the retry, which then answers as the
//! first request would have. The token a create hands out is kept sealed:
//! XORed with SHA-256 of a random per-record salt and the client's key, so
//! a copy of the store without the client's key reveals no token.
//!
//! Only a write that happened is recorded. A request that failed changed
//! nothing, and its retry runs afresh. While a request with a key runs on
//! this host, another with the same key is refused
//! ([`super::Error::IdempotencyKeyInUse`]); one on another host at the same
//! moment runs its plugins, but the store's atomic step lets only one of
//! them write and answers the other with what the first recorded.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::store::OnceKey;

/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's idempotency key: 1 to [`MAX_KEY_LEN`] visible ASCII
/// characters (`!` to `~`).
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key unseals a token: keep it out of logs.
        f.write_str("IdempotencyKey(..)")
    }
}

impl IdempotencyKey {
    /// The key, or `None` when `text` breaks the syntax.
    pub fn parse(text: &str) -> Option<IdempotencyKey> {
        let ok =
            (1..=MAX_KEY_LEN).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| IdempotencyKey(text.to_string()))
    }

    /// What the store keeps of this key in `tenant`, for a request whose
    /// digest is `request`.
    pub(super) fn in_store(&self, tenant: &str, request: String, ttl_ms: u64) -> OnceKey {
        OnceKey {
            id: hex::encode(digest(&[
                b"sessiond idempotency key",
                tenant.as_bytes(),
                self.0.as_bytes(),
            ])),
            request,
            ttl_ms,
            sealed: None,
        }
    }

    /// `token` sealed with this key: hex of a random salt and the token's
    /// bytes XOR SHA-256(salt, key).
    pub(super) fn seal(&self, token: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let salt = crate::ids::random_bytes::<16>();
        let pad = self.pad(&salt);
        if bytes.len() != pad.len() {
            return None;
        }
        let mut out = salt.to_vec();
        out.extend(bytes.iter().zip(pad.iter()).map(|(b, p)| b ^ p));
        Some(hex::encode(out))
    }

    /// The token that [`IdempotencyKey::seal`] sealed, if `sealed` was
    /// sealed with this key's shape.
    pub(super) fn unseal(&self, sealed: &str) -> Option<String> {
        let raw = hex::decode(sealed).ok()?;
        if raw.len() != 16 + 32 {
            return None;
        }
        let (salt, body) = raw.split_at(16);
        let pad = self.pad(salt);
        let bytes: Vec<u8> = body.iter().zip(pad.iter()).map(|(b, p)| b ^ p).collect();
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn pad(&self, salt: &[u8]) -> [u8; 32] {
        digest(&[b"sessiond sealed token", salt, self.0.as_bytes()])
    }
}

/// SHA-256 over `parts`, each preceded by its length so that no two lists
/// of parts give the same input.
fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The digest of a request: the operation and what it asked for.
pub(super) fn request_digest(operation: &str, asked: &[u8]) -> String {
    hex::encode(digest(&[operation.as_bytes(), asked]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax() {
        assert!(IdempotencyKey::parse("a").is_some());
        assert!(IdempotencyKey::parse(&"~".repeat(MAX_KEY_LEN)).is_some());
        assert!(IdempotencyKey::parse("").is_none());
        assert!(IdempotencyKey::parse(&"a".repeat(MAX_KEY_LEN + 1)).is_none());
        assert!(IdempotencyKey::parse("a b").is_none());
        assert!(IdempotencyKey::parse("é").is_none());
        assert!(IdempotencyKey::parse("a\tb").is_none());
    }

    #[test]
    fn sealing_needs_the_key() {
        let key = IdempotencyKey::parse("order-17").unwrap();
        let token = crate::ids::new_token();
        let sealed = key.seal(&token).unwrap();
        assert!(!sealed.contains(&hex::encode(URL_SAFE_NO_PAD.decode(&token).unwrap())));
        assert_eq!(key.unseal(&sealed).as_deref(), Some(token.as_str()));
        assert_ne!(key.seal(&token).unwrap(), sealed, "a fresh salt each time");
        let other = IdempotencyKey::parse("order-18").unwrap();
        assert_ne!(other.unseal(&sealed).as_deref(), Some(token.as_str()));
        let a = key.in_store("t", "r".into(), 1);
        assert_ne!(a.id, key.in_store("u", "r".into(), 1).id);
        assert_ne!(a.id, other.in_store("t", "r".into(), 1).id);
    }
}
