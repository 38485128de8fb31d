//! The `Cluster` service: the client and admin API. Each call is handled in
//! the file of its area; this file holds the service's state, admin
//! authentication, and the table from RPC to handler.

use std::sync::Arc;

use lapse_wire::cluster as pb;
use lapse_wire::cluster::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use lapse_credential::TenantId;
use lapse_ledger::{Authorization, Command, RequestId};

use crate::access::{self, Action};
use crate::core::SharedCore;
use crate::feed::FeedHub;
use crate::issuance::audit::AuditLog;
use crate::issuance::keys::KeyRing;

pub struct ClusterService {
    pub core: SharedCore,
    pub keys: Arc<KeyRing>,
    pub audit: Arc<AuditLog>,
    pub feed: Arc<FeedHub>,
}

/// The metadata key naming the tenant a call is for.
pub const TENANT_HEADER: &str = "x-lapse-tenant";
/// The metadata key carrying the operator's justification.
pub const REASON_HEADER: &str = "x-lapse-reason";

impl ClusterService {
    /// Authenticate the operator and decide whether they may do `action`
    /// for `tenant` (`None`: cluster-wide). A refused write is recorded
    /// in the control-plane audit.
    pub(super) fn permit<T>(
        &self,
        request: &Request<T>,
        action: Action,
        tenant: Option<&TenantId>,
    ) -> Result<Authorization, Status> {
        let principal = super::auth::authorize_admin(&self.core, request)?;
        let justification = justification(request)?;
        let bootstrap = &self.core.config().auth.cluster_admins;
        // Read before the view is: `cluster_now` reads it too, and a second
        // read behind a waiting writer would never be granted.
        let now = self.core.cluster_now();
        let decided = self.core.view().read(|a| {
            access::decide(
                &a.ledger,
                bootstrap,
                &principal,
                action,
                tenant,
                justification.clone(),
                now,
            )
        });
        match decided {
            Ok(authorization) => Ok(authorization),
            Err(access::Denied(reason)) => {
                if action.writes() {
                    record_refusal(
                        &self.core,
                        Authorization {
                            principal,
                            action: action.name().into(),
                            tenant: tenant.cloned(),
                            bindings_version: self.core.view().read(|a| a.ledger.roles_version),
                            policy_version: 0,
                            justification,
                            grant: None,
                        },
                        reason.clone(),
                    );
                }
                Err(Status::permission_denied(reason))
            }
        }
    }

    /// A read other brokers make too (a joining broker is probed with
    /// `Status`): allowed for a broker of this cluster (its certificate, or
    /// without TLS the cluster secret), otherwise decided for the operator
    /// like any other call.
    pub(super) fn permit_read<T>(
        &self,
        request: &Request<T>,
        action: Action,
    ) -> Result<(), Status> {
        if super::auth::is_broker(&self.core, request) {
            return Ok(());
        }
        self.permit(request, action, None).map(|_| ())
    }

    /// The tenant a call names in its [`TENANT_HEADER`], if any.
    pub(super) fn named_tenant<T>(request: &Request<T>) -> Result<Option<TenantId>, Status> {
        match request.metadata().get(TENANT_HEADER) {
            None => Ok(None),
            Some(value) => {
                let text = value
                    .to_str()
                    .map_err(|_| super::invalid(TENANT_HEADER, "not ASCII"))?;
                TenantId::new(text)
                    .map(Some)
                    .map_err(|e| super::invalid(TENANT_HEADER, e))
            }
        }
    }

    /// Record, after the fact, an authorised action carried out outside
    /// the ledger (membership, key rotation), with its outcome.
    pub(super) async fn record_action(
        &self,
        authorization: Authorization,
        outcome: lapse_ledger::ControlOutcome,
    ) {
        record(&self.core, authorization, outcome).await;
    }
}

/// The operator's justification from [`REASON_HEADER`], checked.
pub(super) fn justification<T>(request: &Request<T>) -> Result<Option<String>, Status> {
    let Some(value) = request.metadata().get(REASON_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| super::invalid(REASON_HEADER, "not printable ASCII"))?;
    if text.len() > lapse_ledger::MAX_JUSTIFICATION_BYTES {
        return Err(super::invalid(
            REASON_HEADER,
            format!(
                "{} bytes; at most {}",
                text.len(),
                lapse_ledger::MAX_JUSTIFICATION_BYTES
            ),
        ));
    }
    Ok(Some(text.to_owned()).filter(|t| !t.is_empty()))
}

/// Record a refused call in the control-plane audit, in the background:
/// the caller's answer does not wait for it.
pub(crate) fn record_refusal(core: &SharedCore, authorization: Authorization, reason: String) {
    record_later(core, authorization, Err(reason));
}

/// Record a control-plane event in the background.
pub(crate) fn record_later(
    core: &SharedCore,
    authorization: Authorization,
    outcome: lapse_ledger::ControlOutcome,
) {
    let core = core.clone();
    tokio::spawn(async move { record(&core, authorization, outcome).await });
}

async fn record(
    core: &SharedCore,
    authorization: Authorization,
    outcome: lapse_ledger::ControlOutcome,
) {
    let id = format!("control-{}", hex::encode(core.env().random_bytes::<12>()));
    let Ok(id) = RequestId::new(id) else {
        return;
    };
    record_as(core, id, authorization, outcome).await;
}

/// Record a control-plane event under request id `id` (the same id twice
/// is recorded once); whether it is recorded.
pub(crate) async fn record_as(
    core: &SharedCore,
    id: RequestId,
    authorization: Authorization,
    outcome: lapse_ledger::ControlOutcome,
) -> bool {
    let command = Command::RecordControl {
        authorization,
        outcome,
    };
    match core.propose(id, command).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "a control-plane audit event could not be recorded");
            false
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn revoke(&self, request: Request<pb::RevokeRequest>) -> Answer<pb::RevokeResponse> {
        self.revoke_one(request).await
    }

    async fn revoke_many(
        &self,
        request: Request<pb::RevokeManyRequest>,
    ) -> Answer<pb::RevokeManyResponse> {
        self.revoke_batch(request).await
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Answer<pb::StatusResponse> {
        self.node_status(request).await
    }

    async fn lease_indices(&self, request: Request<pb::LeaseRequest>) -> Answer<pb::LeaseResponse> {
        self.lease(request).await
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Answer<pb::CreateJoinTokenResponse> {
        self.new_join_token(request).await
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Answer<pb::JoinResponse> {
        self.join_broker(request).await
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.add_learner_node(request).await
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.promote_node(request).await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Answer<pb::MembershipResponse> {
        self.remove(request).await
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Answer<pb::PolicyResponse> {
        self.put_policy(request).await
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Answer<pb::PolicyResponse> {
        self.read_policy(request).await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Answer<pb::ListKeysResponse> {
        self.published_keys(request).await
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Answer<pb::RotateKeyResponse> {
        self.rotate(request).await
    }

    async fn query_audit(
        &self,
        request: Request<pb::QueryAuditRequest>,
    ) -> Answer<pb::QueryAuditResponse> {
        self.audit_records(request).await
    }

    async fn propagation(
        &self,
        request: Request<pb::PropagationRequest>,
    ) -> Answer<pb::PropagationResponse> {
        self.propagation_report(request).await
    }

    async fn wait_propagated(
        &self,
        request: Request<pb::WaitPropagatedRequest>,
    ) -> Answer<pb::WaitPropagatedResponse> {
        self.wait(request).await
    }

    async fn bind_role(&self, request: Request<pb::RoleRequest>) -> Answer<pb::RolesResponse> {
        self.change_role(request, true).await
    }

    async fn unbind_role(&self, request: Request<pb::RoleRequest>) -> Answer<pb::RolesResponse> {
        self.change_role(request, false).await
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Answer<pb::RolesResponse> {
        self.roles_list(request).await
    }

    async fn set_access_policy(
        &self,
        request: Request<pb::SetAccessPolicyRequest>,
    ) -> Answer<pb::AccessPolicyResponse> {
        self.put_access_policy(request).await
    }

    async fn get_access_policy(
        &self,
        request: Request<pb::GetAccessPolicyRequest>,
    ) -> Answer<pb::AccessPolicyResponse> {
        self.read_access_policy(request).await
    }

    async fn control_audit(
        &self,
        request: Request<pb::ControlAuditRequest>,
    ) -> Answer<pb::ControlAuditResponse> {
        self.control_events(request).await
    }

    async fn open_grant(
        &self,
        request: Request<pb::OpenGrantRequest>,
    ) -> Answer<pb::GrantsResponse> {
        self.grant_open(request).await
    }

    async fn approve_grant(
        &self,
        request: Request<pb::GrantRequest>,
    ) -> Answer<pb::GrantsResponse> {
        self.settle_grant(request, true).await
    }

    async fn close_grant(&self, request: Request<pb::GrantRequest>) -> Answer<pb::GrantsResponse> {
        self.settle_grant(request, false).await
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Answer<pb::GrantsResponse> {
        self.grants_list(request).await
    }

    async fn create_ssf_receiver(
        &self,
        request: Request<pb::CreateSsfReceiverRequest>,
    ) -> Answer<pb::CreateSsfReceiverResponse> {
        self.new_ssf_receiver(request).await
    }

    async fn list_ssf_receivers(
        &self,
        request: Request<pb::ListSsfReceiversRequest>,
    ) -> Answer<pb::SsfReceiversResponse> {
        self.ssf_receivers(request).await
    }

    async fn remove_ssf_receiver(
        &self,
        request: Request<pb::RemoveSsfReceiverRequest>,
    ) -> Answer<pb::SsfReceiversResponse> {
        self.drop_ssf_receiver(request).await
    }
}
