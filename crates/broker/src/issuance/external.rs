//! External issuers' keys as a broker holds them: read from each issuer's
//! JWKS file at start, read again every `jwks_refresh_seconds`, and again
//! when a token names a key the file did not hold, at most once every
//! `unknown_kid_reread_seconds`, so that tokens with made-up key ids cannot
//! make the broker read the file per request. A failed read keeps the keys
//! last read (and is logged); the JWKS is capped in bytes and keys.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use lapse_credential::{ExternalIssuer, MAX_JWKS_BYTES, VerifyError};

use crate::config::ExternalIssuerConfig;

/// Why an issuer's JWKS could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the JWKS {path}: {source}")]
    Invalid { path: String, source: VerifyError },
}

/// One external issuer: its configuration and the keys last read.
#[derive(Debug)]
pub struct ExternalKeys {
    pub config: ExternalIssuerConfig,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    issuer: Arc<ExternalIssuer>,
    /// When the file was last read or tried, on the monotonic clock (ms).
    attempted_at_ms: f64,
}

impl ExternalKeys {
    /// Read the issuer's JWKS; a broker does not start without it.
    pub fn open(config: ExternalIssuerConfig, monotonic_ms: f64) -> Result<Self, JwksError> {
        let issuer = read(&config)?;
        Ok(Self {
            config,
            held: Mutex::new(Held {
                issuer: Arc::new(issuer),
                attempted_at_ms: monotonic_ms,
            }),
        })
    }

    /// Verify `token` against the keys held, reading the file again first
    /// when the refresh interval has passed, and once more (rate-limited)
    /// when the token names a key not held.
    pub fn verify(
        &self,
        token: &str,
        now_seconds: u64,
        leeway_seconds: u64,
        monotonic_ms: f64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, VerifyError> {
        let refresh_ms = self.config.jwks_refresh_seconds as f64 * 1000.0;
        let issuer = self.reread_if_due(monotonic_ms, refresh_ms);
        match issuer.verify(token, now_seconds, leeway_seconds) {
            Err(VerifyError::UnknownKeyId(kid)) => {
                let reread_ms = self.config.unknown_kid_reread_seconds as f64 * 1000.0;
                let issuer = self.reread_if_due(monotonic_ms, reread_ms);
                if !issuer.has_key(&kid) {
                    return Err(VerifyError::UnknownKeyId(kid));
                }
                issuer.verify(token, now_seconds, leeway_seconds)
            }
            other => other,
        }
    }

    /// The keys held, read again first if the last attempt was at least
    /// `interval_ms` ago. Only one caller reads; the others use the keys
    /// held meanwhile.
    fn reread_if_due(&self, monotonic_ms: f64, interval_ms: f64) -> Arc<ExternalIssuer> {
        let held = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if monotonic_ms - held.attempted_at_ms < interval_ms {
                return held.issuer.clone();
            }
            held.attempted_at_ms = monotonic_ms;
            held.issuer.clone()
        };
        match read(&self.config) {
            Ok(issuer) => {
                let issuer = Arc::new(issuer);
                let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
                held.issuer = issuer.clone();
                issuer
            }
            Err(error) => {
                tracing::warn!(issuer = %self.config.issuer, %error, "keeping the external issuer's keys last read");
                held
            }
        }
    }
}

/// Read and parse the JWKS file of `config`, at most [`MAX_JWKS_BYTES`].
fn read(config: &ExternalIssuerConfig) -> Result<ExternalIssuer, JwksError> {
    let path = config.jwks_file.display().to_string();
    let mut text = String::new();
    std::fs::File::open(&config.jwks_file)
        .and_then(|file| {
            file.take(MAX_JWKS_BYTES as u64 + 1)
                .read_to_string(&mut text)
        })
        .map_err(|source| JwksError::Read {
            path: path.clone(),
            source,
        })?;
    let mut issuer =
        ExternalIssuer::from_jwks_json(config.issuer.clone(), config.audience.clone(), &text)
            .map_err(|source| JwksError::Invalid { path, source })?;
    issuer.require_key_id = config.require_kid;
    issuer.max_token_age_seconds = config.max_token_age_seconds;
    Ok(issuer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ed25519 JWK under `kid` (the key's bytes do not matter here).
    fn jwks(kids: &[&str]) -> String {
        let keys: Vec<serde_json::Value> = kids
            .iter()
            .map(|kid| {
                serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// A token whose header names `kid` (its signature is never reached
    /// when the key is unknown).
    fn token_naming(kid: &str) -> String {
        use base64::Engine;
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        format!(
            "{}.{}.{}",
            b64(serde_json::json!({"alg": "EdDSA", "kid": kid})),
            b64(serde_json::json!({})),
            "c2ln"
        )
    }

    fn config(dir: &std::path::Path) -> ExternalIssuerConfig {
        ExternalIssuerConfig {
            issuer: "https://ci.example".into(),
            audience: "lapse".into(),
            jwks_file: dir.join("jwks.json"),
            tenant: "acme".into(),
            workload_claim: "sub".into(),
            workload_prefix: String::new(),
            require_kid: true,
            max_token_age_seconds: 3600,
            jwks_refresh_seconds: 300,
            unknown_kid_reread_seconds: 10,
        }
    }

    /// The file changes under the broker; which keys it then knows shows
    /// whether it read the file again.
    #[test]
    fn random_key_ids_cannot_make_the_broker_read_the_jwks_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(&config.jwks_file, jwks(&["k1"])).unwrap();
        let keys = ExternalKeys::open(config.clone(), 0.0).unwrap();
        // The issuer rotates to k2 at 1 s; a token naming k2 at 5 s is
        // within 10 s of the last read: refused without reading.
        std::fs::write(&config.jwks_file, jwks(&["k1", "k2"])).unwrap();
        let unknown = |keys: &ExternalKeys, kid: &str, at_ms: f64| {
            matches!(
                keys.verify(&token_naming(kid), 0, 0, at_ms),
                Err(VerifyError::UnknownKeyId(_))
            )
        };
        assert!(unknown(&keys, "k2", 5_000.0));
        // At 10 s it may read again, and finds k2.
        assert!(!unknown(&keys, "k2", 10_000.0));
        // A flood of made-up key ids: the first may read, then none for
        // 10 s, whatever the file says meanwhile.
        assert!(unknown(&keys, "random", 20_000.0));
        std::fs::write(&config.jwks_file, jwks(&["k1", "k2", "k3"])).unwrap();
        for n in 0..1000 {
            assert!(unknown(&keys, &format!("random-{n}"), 20_001.0 + n as f64));
        }
        assert!(unknown(&keys, "k3", 29_000.0), "read during the flood");
        assert!(!unknown(&keys, "k3", 30_500.0));
    }

    #[test]
    fn the_jwks_is_read_again_on_schedule_and_a_bad_file_keeps_the_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(&config.jwks_file, jwks(&["k1"])).unwrap();
        let keys = ExternalKeys::open(config.clone(), 0.0).unwrap();
        // A removed key stays usable until the next scheduled read.
        std::fs::write(&config.jwks_file, jwks(&["k2"])).unwrap();
        let known = |keys: &ExternalKeys, kid: &str, at_ms: f64| {
            !matches!(
                keys.verify(&token_naming(kid), 0, 0, at_ms),
                Err(VerifyError::UnknownKeyId(_))
            )
        };
        assert!(known(&keys, "k1", 299_000.0));
        assert!(!known(&keys, "k1", 300_000.0), "withdrawn on schedule");
        assert!(known(&keys, "k2", 300_001.0));
        // A file that no longer parses, or is too large, keeps what was read.
        std::fs::write(&config.jwks_file, "not json").unwrap();
        assert!(known(&keys, "k2", 600_000.0));
        std::fs::write(&config.jwks_file, "x".repeat(MAX_JWKS_BYTES + 10)).unwrap();
        assert!(known(&keys, "k2", 900_000.0));
        // At start, a broken file is an error.
        assert!(matches!(
            ExternalKeys::open(config, 0.0),
            Err(JwksError::Invalid { .. })
        ));
    }
}
