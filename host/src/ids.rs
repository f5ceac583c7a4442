//! Session tokens and public ids.
//!
//! A token is 32 bytes from the operating system's random generator, written
//! base64url without padding (43 characters). It is the session's secret and
//! its id in the REST API; the store keeps only its SHA-256 (hex). The public
//! id (16 random bytes, base64url) is what plugins, logs and audit records
//! see; it stays when authentication rotates the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;
use rand::rngs::SysRng;
use sha2::{Digest, Sha256};

/// The length of a token in characters.
pub const TOKEN_LEN: usize = 43;

/// How many characters of a token logs may show.
pub const TOKEN_LOG_PREFIX: usize = 6;

/// `N` bytes from the operating system's random generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    random()
}

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // Without the OS generator no secret can be made: nothing sensible is
    // left to do.
    SysRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random generator failed");
    bytes
}

/// A new session token.
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(random::<32>())
}

/// A new public id.
pub fn new_public_id() -> String {
    URL_SAFE_NO_PAD.encode(random::<16>())
}

/// 8 random hex digits (the end worker's consumer name ends with them).
pub fn short_nonce() -> String {
    hex::encode(random::<4>())
}

/// The store key of a token: hex SHA-256 of its text.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `text` has the shape of a token: 43 base64url characters.
pub fn is_token(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The part of a token that logs may show.
pub fn log_prefix(token: &str) -> &str {
    token.get(..TOKEN_LOG_PREFIX).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let token = new_token();
        assert!(is_token(&token), "{token}");
        assert_ne!(token, new_token());
        assert_eq!(new_public_id().len(), 22);
        assert_eq!(short_nonce().len(), 8);
        assert_eq!(token_hash(&token).len(), 64);
        assert!(!is_token("short"));
        assert!(!is_token(&format!("{}=", &token[..42])));
        assert_eq!(log_prefix(&token).len(), 6);
    }
}
