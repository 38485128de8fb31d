//! Proof of possession at the edge (RFC 9449): a key-bound credential
//! (`cnf.jkt`) is accepted only with a fresh DPoP proof by its key, for the
//! request it came with, each proof id once.

use super::*;

/// A DPoP proof (RFC 9449) and the request it accompanied.
#[derive(Debug, Clone, Copy)]
pub struct Proof<'a> {
    /// The `DPoP` header's value.
    pub proof: &'a str,
    /// The request's method (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The request's URI, without query or fragment (`htu`).
    pub uri: &'a str,
    /// Remember the proof's id, refusing it if seen before. `false` only
    /// when another verifier already checked this very request (one
    /// process answering for several).
    pub remember: bool,
}

impl Verifier {
    /// A key-bound credential's DPoP proof: made by the key `jkt` names,
    /// for this credential (`ath`) and this request, recently, and never
    /// seen before.
    pub(super) fn check_possession(
        &self,
        token: &str,
        jkt: &str,
        proof: Option<Proof<'_>>,
        now_seconds: u64,
    ) -> Result<(), Rejection> {
        let refused = |detail: String| Rejection::ProofOfPossession { detail };
        let Some(proof) = proof else {
            return Err(refused(
                "the credential is bound to a key (cnf.jkt): send a DPoP proof made with it, and the request's method and URI".into(),
            ));
        };
        let verified = lapse_credential::verify_proof(
            proof.proof,
            &lapse_credential::DpopExpectation {
                method: proof.method,
                url: proof.uri,
                access_token: Some(token),
                now_seconds,
                max_age_seconds: self.config.dpop_max_age_seconds,
                leeway_seconds: self.config.leeway_seconds,
            },
        )
        .map_err(|e| refused(e.to_string()))?;
        if verified.jkt != jkt {
            return Err(refused(
                "the DPoP proof is signed by another key than the credential is bound to".into(),
            ));
        }
        if proof.remember {
            self.proofs_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check_and_remember(&verified.jti, now_seconds)
                .map_err(|e| refused(e.to_string()))?;
        }
        Ok(())
    }
}
