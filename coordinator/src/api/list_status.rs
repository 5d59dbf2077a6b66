//! `ListStatus` answered a slice at a time. Every target's status at once is about a kilobyte a
//! target with its regions (a tenth of a gigabyte at 100,000 targets), held until its encoding
//! (another 20 MB) is done; this answers the call with the bytes the generated server would
//! send, but builds and encodes the statuses `SLICE` at a time straight into the response, so
//! only the encoded answer and one slice are held. Every other call goes to the generated
//! server; this one is authorized and checked as the others are (`AdminEndpoint::list_status_answer`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message as _;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use vantage_proto::v1::coordinator_server::CoordinatorServer;
use vantage_proto::v1::{FailingChannel, ListStatusRequest, ListStatusResponse, TargetStatus};

use super::operator::AdminEndpoint;
use crate::hub::Hub;

/// The method this answers; every other path goes to the generated server.
const PATH: &str = "/vantage.v1.Coordinator/ListStatus";
/// Statuses built (under the hub's lock) and encoded at a time (and sent at a time to a
/// `WatchStatus` watcher).
pub(super) const SLICE: usize = 1_000;
/// `ListStatusResponse`'s field numbers.
const TARGETS: u32 = 1;
const FAILING_CHANNELS: u32 = 2;

/// What a `ListStatus` call answers, encoded when the answer is written.
pub struct Answer {
    pub hub: Arc<Hub>,
    /// The targets asked for, normalized (empty: every target).
    pub urls: Vec<String>,
    pub failing_channels: Vec<FailingChannel>,
}

impl Answer {
    /// The answer as one message (what the generated server's handler returns).
    pub fn into_response(self) -> ListStatusResponse {
        let mut targets = Vec::new();
        self.for_each_slice(|slice| targets.extend(slice));
        ListStatusResponse { targets, failing_channels: self.failing_channels }
    }

    /// Hands over the statuses in URL order, at most `SLICE` at a time (every target's, or those
    /// asked for: at most `MAX_URLS_PER_REQUEST`, in one slice).
    fn for_each_slice(&self, mut f: impl FnMut(Vec<TargetStatus>)) {
        // Each slice's availability is read from the store in one read transaction.
        let with_uptime = |mut slice: Vec<TargetStatus>| {
            self.hub.fill_uptime(&mut slice);
            slice
        };
        if !self.urls.is_empty() {
            f(with_uptime(self.hub.statuses(&self.urls)));
            return;
        }
        let mut after: Option<String> = None;
        loop {
            let slice = self.hub.statuses_after(after.as_deref(), SLICE);
            let Some(last) = slice.last() else { break };
            after = Some(last.url.clone());
            let full = slice.len() == SLICE;
            f(with_uptime(slice));
            if !full {
                break;
            }
        }
    }

    /// Writes the answer as `ListStatusResponse`'s encoding: each status as field 1, then each
    /// failing channel as field 2, as prost encodes the message.
    fn encode(self, buf: &mut EncodeBuf<'_>) {
        let targets = self.hub.target_count();
        let mut first = true;
        self.for_each_slice(|slice| {
            let bytes: usize = slice.iter().map(|s| prost::encoding::message::encoded_len(TARGETS, s)).sum();
            if first && !slice.is_empty() {
                // Room for every target at the first slice's size, once, rather than doubling
                // (each doubling holds the old buffer and the new one for a moment).
                first = false;
                buf.reserve(bytes / slice.len() * targets.max(slice.len()) * 11 / 10);
            }
            buf.reserve(bytes);
            for status in &slice {
                prost::encoding::message::encode(TARGETS, status, buf);
            }
        });
        for channel in &self.failing_channels {
            prost::encoding::message::encode(FAILING_CHANNELS, channel, buf);
        }
    }
}

/// The operator API: the generated server, but `ListStatus` answered by [`Answer`].
#[derive(Clone)]
pub struct AdminServer {
    generated: CoordinatorServer<AdminEndpoint>,
    endpoint: Arc<AdminEndpoint>,
    max_decoding: usize,
    max_encoding: usize,
}

impl AdminServer {
    /// `max_decoding` and `max_encoding` as the generated server's
    /// `max_decoding_message_size` and `max_encoding_message_size`, for every call.
    pub fn new(endpoint: AdminEndpoint, max_decoding: usize, max_encoding: usize) -> AdminServer {
        let endpoint = Arc::new(endpoint);
        let generated = CoordinatorServer::from_arc(endpoint.clone())
            .max_decoding_message_size(max_decoding)
            .max_encoding_message_size(max_encoding);
        AdminServer { generated, endpoint, max_decoding, max_encoding }
    }
}

impl NamedService for AdminServer {
    const NAME: &'static str = <CoordinatorServer<AdminEndpoint> as NamedService>::NAME;
}

impl Service<http::Request<tonic::body::Body>> for AdminServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path() != PATH {
            return self.generated.call(request);
        }
        let method = ListStatusCall(self.endpoint.clone());
        let mut grpc =
            Grpc::new(SlicedCodec).apply_max_message_size_config(Some(self.max_decoding), Some(self.max_encoding));
        Box::pin(async move { Ok(grpc.unary(method, request).await) })
    }
}

struct ListStatusCall(Arc<AdminEndpoint>);

impl UnaryService<ListStatusRequest> for ListStatusCall {
    type Response = Answer;
    type Future = BoxFuture<Response<Answer>, Status>;

    fn call(&mut self, request: Request<ListStatusRequest>) -> Self::Future {
        let endpoint = self.0.clone();
        Box::pin(async move { endpoint.list_status_answer(request).map(Response::new) })
    }
}

/// Decodes the request as prost does; encodes an [`Answer`].
struct SlicedCodec;

impl Codec for SlicedCodec {
    type Encode = Answer;
    type Decode = ListStatusRequest;
    type Encoder = SlicedCodec;
    type Decoder = SlicedCodec;

    fn encoder(&mut self) -> SlicedCodec {
        SlicedCodec
    }

    fn decoder(&mut self) -> SlicedCodec {
        SlicedCodec
    }
}

impl Encoder for SlicedCodec {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, answer: Answer, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        answer.encode(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for SlicedCodec {
    type Item = ListStatusRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<ListStatusRequest>, Status> {
        ListStatusRequest::decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}
