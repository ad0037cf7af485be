//! The `envoy.service.ext_proc.v3.ExternalProcessor` gRPC service: one [`Processor`] per stream,
//! fed each message as it arrives and answering before reading the next, so a streamed response
//! chunk is never held back.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::processor::{Processor, Role};
use crate::reload::ConfigStore;
use aigw_filterconfig::{ROLE_METADATA, UPSTREAM_ROLE};

/// The service.
pub struct ExtProc {
    config: Arc<ConfigStore>,
    metrics: Arc<Metrics>,
}

impl ExtProc {
    /// A service reading its configuration from `config`.
    pub fn new(config: Arc<ConfigStore>, metrics: Arc<Metrics>) -> Self {
        ExtProc { config, metrics }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

/// Owns a stream's processor; records an unfinished request when the stream goes away.
struct StreamGuard(Processor);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.abandon();
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let role = match request.metadata().get(ROLE_METADATA) {
            Some(value) if value.as_bytes() == UPSTREAM_ROLE.as_bytes() => Role::Upstream,
            _ => Role::Router,
        };
        let inbound = request.into_inner();
        // The configuration is read once per stream: a reload never changes a request midway.
        let mut guard = StreamGuard(Processor::with_role(
            self.config.current(),
            self.metrics.clone(),
            role,
        ));
        // Each message is answered inline, in the task that polls the response stream (the
        // connection's): no hand-off to another task, so no cross-thread wake-up per message.
        let responses = inbound.map_while(move |message| match message {
            Ok(message) => Some(Ok(guard.0.handle(message))),
            Err(status) => {
                tracing::debug!(code = ?status.code(), "ext_proc stream ended by the peer");
                None
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }
}
