//! OTLP export of spans (`[log.otlp]`): every span the server logs can also
//! go to an OpenTelemetry collector, over OTLP/HTTP with protobuf bodies.
//!
//! A trace is exported whole or not at all: one whose caller sent a
//! `traceparent` follows its sampled flag, and a new one is sampled with
//! probability `sample_ratio`, decided by its trace id (the end job of a
//! session follows the request that ended it). Unsampled spans are not
//! exported, but the OpenTelemetry layer still builds their data before the
//! sampler decides, so `level` saves more than the ratio (docs/load.md).
//!
//! Spans are batched by the OpenTelemetry SDK on a thread of its own and
//! sent every `export_interval_ms`; a batch that cannot be sent is dropped
//! after `timeout_ms` (the SDK logs it), so a collector that is down costs
//! the server nothing but the spans. The HTTP requests go through the same
//! client library as webhook deliveries, on the server's own async runtime.
//! On shutdown the spans still batched are sent before the process exits.

use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::config::OtlpConfig;

/// The exporter of a running server: flush it with [`Export::shutdown`]
/// before the async runtime it sends on stops.
#[derive(Debug)]
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Starts exporting as `config` says; `runtime` is where the HTTP
    /// requests run. Returns the layer to add to the subscriber.
    pub fn start<S>(
        config: &OtlpConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<(
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Export,
    )>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the OTLP HTTP client")?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.as_str())
            .with_timeout(Duration::from_millis(config.timeout_ms))
            .with_headers(config.headers.clone().into_iter().collect())
            .with_http_client(Client { http, runtime })
            .build()
            .context("log.otlp")?;
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
                    .build(),
            )
            .build();
        // A trace whose caller decided (its traceparent's sampled flag)
        // keeps that decision; a new one is sampled by its trace id, so
        // every host decides the same for it.
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_span_processor(batches)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sessiond");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer);
        Ok((layer, Export { provider }))
    }

    /// Sends the spans still batched and stops the exporter. Blocks until
    /// they are sent or have timed out; call it outside the async runtime,
    /// which must still be running.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: flushing the last spans to the OTLP collector failed: {e}");
        }
    }
}

/// The exporter's HTTP client: the SDK's batch thread has no async runtime,
/// so each request is spawned on the server's.
#[derive(Debug)]
struct Client {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let http = self.http.clone();
        self.runtime
            .spawn(async move {
                let response = http.execute(reqwest::Request::try_from(request)?).await?;
                let mut answer = http::Response::builder().status(response.status());
                for (name, value) in response.headers() {
                    answer = answer.header(name, value);
                }
                let body = response.bytes().await?;
                Ok(answer.body(body)?)
            })
            .await?
    }
}
