//! DPoP server nonces (RFC 9449 §8): a broker accepts a key-bound refresh
//! or issuance only with a proof carrying a nonce it handed out itself, in
//! this life. The nonce is the 30-second window of cluster time and a
//! keyed digest of it under a key drawn at start: another broker, or this
//! one after a restart, cannot check it, so a proof seen once cannot be
//! played to them; this broker's replay cache covers its own life.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// How long one window of nonces is; a nonce is good for its window and
/// the next.
const WINDOW_MS: u64 = 30_000;
/// The gRPC metadata key a fresh nonce is handed out in.
pub const NONCE_HEADER: &str = "dpop-nonce";

pub struct DpopNonces {
    key: [u8; 32],
}

impl DpopNonces {
    /// Nonces under `key` (random, drawn once per broker life).
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn tag(&self, window: u64) -> [u8; 16] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(b"lapse-dpop-nonce");
        hasher.update(window.to_be_bytes());
        let digest = hasher.finalize();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&digest[..16]);
        tag
    }

    /// The nonce to hand out at cluster time `now_ms`.
    pub fn current(&self, now_ms: u64) -> String {
        let window = now_ms / WINDOW_MS;
        let mut bytes = window.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.tag(window));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `nonce` is one this broker handed out in this life, in the
    /// window of `now_ms` or the one before.
    pub fn accepts(&self, nonce: &str, now_ms: u64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else {
            return false;
        };
        let Ok(bytes) = <[u8; 24]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let mut window = [0u8; 8];
        window.copy_from_slice(&bytes[..8]);
        let window = u64::from_be_bytes(window);
        let now = now_ms / WINDOW_MS;
        (window == now || window.saturating_add(1) == now)
            && lapse_credential_eq(&bytes[8..], &self.tag(window))
    }
}

/// Compare without an early exit.
fn lapse_credential_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_here_for_its_window_and_the_next_and_nowhere_else() {
        let here = DpopNonces::new([1; 32]);
        let elsewhere = DpopNonces::new([2; 32]);
        let nonce = here.current(61_000);
        assert!(here.accepts(&nonce, 61_000));
        assert!(here.accepts(&nonce, 89_999));
        assert!(here.accepts(&nonce, 119_999));
        assert!(!here.accepts(&nonce, 120_000), "two windows on");
        assert!(!here.accepts(&nonce, 59_999), "from the future");
        assert!(
            !elsewhere.accepts(&nonce, 61_000),
            "another broker, or a restart"
        );
        for bad in ["", "x", &"A".repeat(32), &format!("{nonce}A")] {
            assert!(!here.accepts(bad, 61_000), "{bad:?}");
        }
    }
}
