//! The `Cluster` service: the client and admin API. Each call is handled in
//! the file of its area; this file holds the service's state, admin
//! authentication, and the table from RPC to handler.

use std::sync::Arc;

use lapse_wire::cluster as pb;
use lapse_wire::cluster::cluster_server::Cluster;
use tonic::{Request, Response, Status};

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

impl ClusterService {
    /// Require an operator: by certificate, or by admin token.
    pub(super) fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        super::auth::authorize_admin(&self.core, request)
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
}
