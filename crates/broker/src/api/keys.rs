//! `ListKeys` and `RotateKey`: the cluster's published signing keys, and a
//! rotation of this broker's own.

use std::time::Duration;

use super::convert;
use lapse_wire::cluster as pb;
use tonic::{Request, Response, Status};

use super::ClusterService;

impl ClusterService {
    pub(super) async fn published_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        // Relying parties read the public keys from the JWKS over HTTPS;
        // this call also says which broker holds which, and when each retires.
        self.permit_read(&request, crate::access::Action::ReadStatus)?;
        let (keys, evidence_keys) = self.core.view().read(|a| {
            let keys = &a.ledger.keys;
            (
                keys.iter()
                    .map(|(id, key)| convert::signing_key_info(id, key))
                    .collect(),
                a.ledger
                    .evidence_keys
                    .iter()
                    .map(|(id, key)| convert::evidence_key_info(id, key, keys.get(id)))
                    .collect(),
            )
        });
        Ok(Response::new(pb::ListKeysResponse {
            keys,
            evidence_keys,
        }))
    }

    pub(super) async fn rotate(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let authorization = self.permit(&request, crate::access::Action::RotateKey, None)?;
        let rotated = self.rotate_now().await;
        let outcome = match &rotated {
            Ok(response) => Ok(format!(
                "rotated broker {}'s key to {} (retired {:?})",
                self.core.id(),
                response.key_id,
                response.retired_key_id
            )),
            Err(status) => Err(status.message().to_owned()),
        };
        self.record_action(authorization, outcome).await;
        rotated.map(Response::new)
    }

    async fn rotate_now(&self) -> Result<pb::RotateKeyResponse, Status> {
        let settings = &self.core.config().issuance;
        let lifetime =
            Duration::from_secs(settings.key_rotation_seconds + settings.key_overlap_seconds);
        let previous = self.keys.rotate(&self.core, lifetime).await?;
        if let Some(previous) = &previous {
            self.keys.retire(&self.core, previous.clone()).await?;
        }
        let current = self
            .keys
            .signing_key(&self.core)
            .map(|k| k.key_id().to_string())
            .unwrap_or_default();
        Ok(pb::RotateKeyResponse {
            key_id: current,
            retired_key_id: previous.map(|k| k.to_string()).unwrap_or_default(),
        })
    }
}
