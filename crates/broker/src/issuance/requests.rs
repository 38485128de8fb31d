//! The two requests that start or renew a chain: `issue`, on an
//! attestation, and `refresh`, on a current credential of the chain
//! (`exchange.rs` holds the third, delegation). Each validates, attests,
//! and hands the rest to [`Issuer::grant`]; every attempt is audited.

use super::issuer::{
    Attestation, IssueParams, Issued, Issuer, RefreshParams, asked_or_held, check_list,
    claimed_tenant, task_context, widening,
};
use super::stats::RequestKind;
use crate::error::BrokerError;

impl Issuer {
    /// Issue a credential to the workload the attestation proves, if its
    /// tenant's policy allows it. Every attempt is audited.
    pub async fn issue(&self, request: IssueParams) -> Result<Issued, BrokerError> {
        let answer = self.issue_unmeasured(request);
        self.stats.measure(RequestKind::Issue, answer).await
    }

    async fn issue_unmeasured(&self, request: IssueParams) -> Result<Issued, BrokerError> {
        check_list("scopes", &request.scopes)?;
        check_list("audiences", &request.audiences)?;
        if request.audiences.is_empty() {
            return Err(BrokerError::Invalid(
                "audiences: name at least one audience".into(),
            ));
        }
        let task_context = task_context(&request.task, &request.on_behalf_of, &request.intent)?;
        self.core.confirmed_cluster_now().await?;
        let jkt = Some(request.dpop_jkt.clone()).filter(|j| !j.is_empty());
        if let Some(jkt) = &jkt
            && !super::exchange::is_thumbprint(jkt)
        {
            return Err(BrokerError::Invalid(
                "dpop_jkt: expected an RFC 7638 SHA-256 thumbprint, base64url".into(),
            ));
        }
        // Bound only to a key the caller shows it holds; checked before
        // the attestation, so a refused proof spends no join token.
        if let Some(jkt) = &jkt
            && let Err(error) = self.check_issue_proof(jkt, &request.dpop_proof)
        {
            return Err(self
                .refuse_unattested(
                    &request.tenant,
                    (&request.scopes, &request.audiences),
                    error,
                )
                .await);
        }
        let attested = match &request.attestation {
            Some(Attestation::JoinToken(token)) => {
                self.attest_join_token(token, &request.request_id).await
            }
            Some(Attestation::ExternalJwt(token)) => self.attest_external(token),
            None => Err(BrokerError::Invalid(
                "attestation: give a join_token or an external_jwt".into(),
            )),
        };
        let mut attested = match attested {
            Ok(attested) => attested,
            Err(error) => {
                return Err(self
                    .refuse_unattested(
                        &request.tenant,
                        (&request.scopes, &request.audiences),
                        error,
                    )
                    .await);
            }
        };
        if !request.tenant.is_empty() && request.tenant != attested.tenant.as_str() {
            let error = BrokerError::Forbidden(format!(
                "tenant mismatch: the attestation is for tenant {}, not {}",
                attested.tenant, request.tenant
            ));
            let asked = (request.scopes.as_slice(), request.audiences.as_slice());
            return Err(self.refuse_plainly(Some(&attested), asked, error).await);
        }
        attested.agent = task_context;
        self.grant(
            attested,
            request.scopes,
            request.audiences,
            request.ttl_seconds,
            jkt,
        )
        .await
    }

    /// Issue a fresh credential for the holder of a valid, unrevoked one,
    /// bound to the same key. Every attempt is audited.
    pub async fn refresh(&self, request: RefreshParams) -> Result<Issued, BrokerError> {
        let answer = self.refresh_unmeasured(request);
        self.stats.measure(RequestKind::Refresh, answer).await
    }

    async fn refresh_unmeasured(&self, request: RefreshParams) -> Result<Issued, BrokerError> {
        check_list("scopes", &request.scopes)?;
        check_list("audiences", &request.audiences)?;
        self.core.confirmed_cluster_now().await?;
        let attested = match self.attest_refresh(&request) {
            Ok(attested) => attested,
            Err(error) => {
                return Err(self
                    .refuse_unattested(
                        &claimed_tenant(&request.credential),
                        (&request.scopes, &request.audiences),
                        error,
                    )
                    .await);
            }
        };
        // Without new scopes or audiences, keep the old ones; new ones may
        // only narrow them.
        let previous = attested.previous.clone();
        let held_scopes = previous
            .as_ref()
            .map(|c| c.scopes.clone())
            .unwrap_or_default();
        let held_audiences = previous.as_ref().map(|c| c.aud.clone()).unwrap_or_default();
        let widened = |asked: &[String], held: &[String], what: &str| {
            widening(asked, held).map(|a| {
                BrokerError::Forbidden(format!(
                    "a refresh may only narrow: {what} {a:?} is not in the credential being refreshed"
                ))
            })
        };
        if let Some(error) = widened(&request.scopes, &held_scopes, "scope")
            .or_else(|| widened(&request.audiences, &held_audiences, "audience"))
        {
            return Err(self
                .refuse_plainly(
                    Some(&attested),
                    (&request.scopes, &request.audiences),
                    error,
                )
                .await);
        }
        let scopes = asked_or_held(request.scopes, &held_scopes);
        let audiences = asked_or_held(request.audiences, &held_audiences);
        let jkt = attested.bound_jkt.clone();
        self.grant(attested, scopes, audiences, request.ttl_seconds, jkt)
            .await
    }
}
