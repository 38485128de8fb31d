//! The server side of the `Feed` service, written out rather than generated
//! so that a subscriber's stream can carry events already encoded.
//!
//! A broker (or a relay) sends the same delta and the same heartbeat to
//! every subscriber that holds the epoch it follows from. It encodes such
//! an event once, as a [`FeedFrame::Shared`], and every subscriber's stream
//! writes those bytes as they are: no protobuf encoding per subscriber.
//! Events that differ per subscriber (a snapshot on resume, a catch-up
//! delta, an answer to its use report) are [`FeedFrame::Own`]. On the wire
//! both are a plain `FeedEvent`; clients decode them with the generated
//! `feed_client` as before.

use std::convert::Infallible;

use prost::Message as _;
use prost::bytes::{BufMut, Bytes};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tonic::{Request, Response, Status, Streaming};

use crate::feed::{FeedEvent, FeedRequest};

/// One message of a subscriber's stream.
#[derive(Debug, Clone)]
pub enum FeedFrame {
    /// A `FeedEvent` encoded once, shared by every stream it goes to.
    Shared(Bytes),
    /// An event made for this subscriber.
    Own(FeedEvent),
}

impl FeedFrame {
    /// Encode `event` once, for any number of subscribers.
    pub fn shared(event: &FeedEvent) -> Self {
        Self::Shared(Bytes::from(event.encode_to_vec()))
    }
}

impl Default for FeedFrame {
    fn default() -> Self {
        Self::Own(FeedEvent::default())
    }
}

impl prost::Message for FeedFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        match self {
            Self::Shared(bytes) => buf.put_slice(bytes),
            Self::Own(event) => event.encode_raw(buf),
        }
    }

    /// Frames are only ever sent; anything merged into one is skipped.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Shared(bytes) => bytes.len(),
            Self::Own(event) => event.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// What serves `Feed/Subscribe` with frames: a broker's feed or a relay's.
#[tonic::codegen::async_trait]
pub trait FrameFeed: Send + Sync + 'static {
    /// The subscriber's stream of frames.
    type Stream: tonic::codegen::tokio_stream::Stream<Item = Result<FeedFrame, Status>>
        + Send
        + 'static;

    /// Take a subscription: `request` carries the subscriber's requests,
    /// a `Hello` first.
    async fn subscribe(
        &self,
        request: Request<Streaming<FeedRequest>>,
    ) -> Result<Response<Self::Stream>, Status>;
}

/// The `Feed` gRPC service over a [`FrameFeed`].
pub struct FeedFrameServer<T> {
    inner: std::sync::Arc<T>,
    max_decoding_message_size: Option<usize>,
}

impl<T> FeedFrameServer<T> {
    pub fn new(inner: T) -> Self {
        Self::from_arc(std::sync::Arc::new(inner))
    }

    pub fn from_arc(inner: std::sync::Arc<T>) -> Self {
        Self {
            inner,
            max_decoding_message_size: None,
        }
    }

    /// Largest request message read (default: tonic's 4 MiB).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl<T> Clone for FeedFrameServer<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<T> tonic::server::NamedService for FeedFrameServer<T> {
    const NAME: &'static str = crate::feed::feed_server::SERVICE_NAME;
}

/// The path of the one method.
pub const SUBSCRIBE_PATH: &str = "/lapse.feed.v1.Feed/Subscribe";

/// One call of `Subscribe`, as tonic's streaming handler wants it.
struct Subscribe<T>(std::sync::Arc<T>);

impl<T: FrameFeed> Service<Request<Streaming<FeedRequest>>> for Subscribe<T> {
    type Response = Response<T::Stream>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Streaming<FeedRequest>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.subscribe(request).await })
    }
}

impl<T, B> Service<http::Request<B>> for FeedFrameServer<T>
where
    T: FrameFeed,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SUBSCRIBE_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("the Feed service has only Subscribe").into_http())
            });
        }
        let inner = self.inner.clone();
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<FeedFrame, FeedRequest>::default();
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(max_decoding, None);
            Ok(grpc.streaming(Subscribe(inner), request).await)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::Heartbeat;
    use crate::feed::feed_event::Kind;

    #[test]
    fn a_shared_frame_is_the_event_encoded() {
        let event = FeedEvent {
            kind: Some(Kind::Heartbeat(Heartbeat {
                interval_ms: 200,
                voucher: None,
            })),
            epoch: 7,
            from_epoch: 0,
            cluster_time_ms: 1_700_000_000_000,
            broker_id: 3,
            max_credential_ttl_ms: 600_000,
        };
        let shared = FeedFrame::shared(&event);
        let own = FeedFrame::Own(event.clone());
        assert_eq!(shared.encode_to_vec(), own.encode_to_vec());
        assert_eq!(shared.encoded_len(), own.encoded_len());
        assert_eq!(FeedEvent::decode(&*shared.encode_to_vec()).unwrap(), event);
    }
}
