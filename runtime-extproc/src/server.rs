//! The `envoy.service.ext_proc.v3.ExternalProcessor` gRPC service: one [`Processor`] per stream,
//! fed each message as it arrives and answering before reading the next, so a streamed response
//! chunk is never held back.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::processor::Processor;
use crate::reload::ConfigStore;

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

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = ResponseStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        // The configuration is read once per stream: a reload never changes a request midway.
        let mut processor = Processor::new(self.config.current(), self.metrics.clone());
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        let response = processor.handle(message);
                        if tx.send(Ok(response)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(code = ?status.code(), "ext_proc stream ended by the peer");
                        break;
                    }
                }
            }
            processor.abandon();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
