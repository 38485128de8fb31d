//! The `Feed` gRPC service: one session per subscribed verifier.
//!
//! [`FeedService::subscribe`] checks the subscriber (its certificate, its
//! `Hello`, this broker's limits) and answers with its session
//! ([`session`]) as the response's stream; use reports it sends are
//! handled in [`uses`].

mod session;
mod uses;

use std::sync::Arc;

use lapse_wire::feed::FeedRequest;
use lapse_wire::frames::{FeedFrame, FrameFeed};
use lapse_wire::names::{HELLO_TIMEOUT, check_hello, hello_of};
use tonic::{Request, Response, Status, Streaming};

use crate::feed::FeedHub;
use session::Session;

pub struct FeedService {
    pub hub: Arc<FeedHub>,
}

#[tonic::async_trait]
impl FrameFeed for FeedService {
    type Stream = futures::stream::BoxStream<'static, Result<FeedFrame, Status>>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::Stream>, Status> {
        // With TLS only a verifier may subscribe, under its certified name.
        let certified = super::auth::check_verifier(&self.hub.core, &request)?;
        let mut inbound = request.into_inner();
        let hello = hello_of(
            tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
                .await
                .ok(),
        )?;
        check_hello(&hello, certified.as_deref())?;
        let hub = &self.hub;
        let identity_slot = match &certified {
            Some(name) => Some(hub.identity_slot(name).ok_or_else(|| {
                Status::resource_exhausted(format!(
                    "the certificate of verifier {name:?} already holds its maximum of {} subscriptions on broker {} (feed.max_subscribers_per_identity)",
                    hub.settings.max_subscribers_per_identity,
                    hub.core.id()
                ))
            })?),
            None => None,
        };
        let permit = hub.permits.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "broker {} already serves its maximum of {} verifiers; try another broker",
                hub.core.id(),
                hub.settings.max_subscribers
            ))
        })?;
        // Subscribe to the broadcast before reading the state, so nothing
        // published in between is missed.
        let updates = hub.updates.subscribe();
        let session = Session::new(hub.clone(), hello, inbound, updates, permit, identity_slot);
        Ok(Response::new(session.into_stream()))
    }
}
