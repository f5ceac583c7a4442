//! The fast tier: the HTTP edge without a socket. An [`Edge`] builds the
//! real router over the memory store from a config with no plugins, and
//! sends requests through it with `tower::ServiceExt::oneshot`: extractors,
//! problems, `If-Match` and bad input are tested in milliseconds, with no
//! server thread, port or wasm.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;
use sessiond::app::App;
use sessiond::config::Config;
use tower::ServiceExt as _;

use crate::server::Reply;

/// The router of a server built from a config, and its shared handles.
#[derive(Debug, Clone)]
pub struct Edge {
    router: Router,
    app: Arc<App>,
    key: Option<String>,
}

impl Edge {
    /// Builds the app of `toml` (memory store; the config must load no
    /// plugin to stay fast) and its router.
    pub async fn start(toml: &str) -> Edge {
        let mut config = Config::parse(toml, "edge.toml", std::path::Path::new("."))
            .expect("the edge config parses");
        config.runtime.cache_dir = None;
        config.runtime.max_instances = 4;
        config
            .validate("edge.toml")
            .expect("the edge config is valid");
        let server = sessiond::server::build(config)
            .await
            .expect("the edge app builds");
        let app = server.app().clone();
        Edge {
            router: sessiond::api::router(app.clone()),
            app,
            key: None,
        }
    }

    /// The same router, sending `key` as the bearer API key.
    pub fn with_key(&self, key: &str) -> Edge {
        Edge {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    /// The same router, sending no API key.
    pub fn anonymous(&self) -> Edge {
        Edge {
            key: None,
            ..self.clone()
        }
    }

    /// The server's shared handles (stores, tenants).
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// A request with the API key, if any.
    pub fn request(&self, method: Method, path: &str) -> axum::http::request::Builder {
        let builder = Request::builder().method(method).uri(path);
        match &self.key {
            Some(key) => builder.header("authorization", format!("Bearer {key}")),
            None => builder,
        }
    }

    /// Sends a request through the router and reads the whole answer.
    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("reading the body");
        Reply::from_parts(status, headers, &bytes)
    }

    /// A request without a body.
    pub async fn empty(&self, method: Method, path: &str) -> Reply {
        self.send(
            self.request(method, path)
                .body(Body::empty())
                .expect("a request"),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.empty(Method::GET, path).await
    }

    /// A request with `body` sent as-is under `content_type`.
    pub async fn raw(&self, method: Method, path: &str, content_type: &str, body: &str) -> Reply {
        self.send(
            self.request(method, path)
                .header("content-type", content_type)
                .body(Body::from(body.to_string()))
                .expect("a request"),
        )
        .await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.raw(Method::POST, path, "application/json", &body.to_string())
            .await
    }

    /// Creates a session; panics unless 201. Returns the answer's body.
    pub async fn create(&self, body: &Value) -> Value {
        self.post("/v1/sessions", body).await.expect(201).body
    }
}
