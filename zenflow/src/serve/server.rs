//! The HTTP side: the Open Inference Protocol's routes, the repository
//! extension's load (behind the admin token), the registry poll, and a
//! shutdown that drains.

use super::protocol::{InferRequest, InferResponse, ModelMetadata, ServerMetadata};
use super::slot::{BakePolicy, LoadError, LoadOutcome, Loaded, Loader, Slot};
use super::PredictError;
use crate::Stack;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zenflow_core::registry::{ModelRegistry, RegistryError, VersionRef};

/// The environment variable the admin token is read from by default.
pub const TOKEN_ENV: &str = "ZENFLOW_DEPLOY_TOKEN";

/// How `serve` runs.
#[derive(Clone)]
pub struct ServeOptions {
    /// The model to serve.
    pub model: String,
    /// The alias whose version it serves.
    pub alias: String,
    /// Where to listen (127.0.0.1 unless told otherwise).
    pub bind: SocketAddr,
    /// How often to look up the alias in the registry; `None`: only when
    /// the deployer asks.
    pub poll: Option<Duration>,
    /// When a new version is swapped back out.
    pub bake: BakePolicy,
    /// The bearer token of the admin calls; `None` turns them off.
    pub admin_token: Option<String>,
    /// The largest request body.
    pub max_body: usize,
    /// After the shutdown signal, how long it goes on serving while
    /// `/v2/health/ready` answers 503, before it stops accepting
    /// connections: the time a load balancer (a Kubernetes Service) takes
    /// to see it not ready and stop sending it requests. Zero: it stops
    /// accepting at once.
    pub drain_delay: Duration,
    /// Start even when nobody holds the alias yet, not ready until a
    /// version takes it; otherwise [`Server::bind`] refuses such an alias.
    pub wait_for_alias: bool,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("model", &self.model)
            .field("alias", &self.alias)
            .field("bind", &self.bind)
            .field("poll", &self.poll)
            .field("bake", &self.bake)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<redacted>"))
            .field("max_body", &self.max_body)
            .field("drain_delay", &self.drain_delay)
            .field("wait_for_alias", &self.wait_for_alias)
            .finish()
    }
}

impl ServeOptions {
    /// Serves the version of `model` holding `alias` on 127.0.0.1:8080,
    /// polling every 30 s, with the default bake window, the admin token
    /// from `ZENFLOW_DEPLOY_TOKEN`, an 8 MiB body limit and no drain delay;
    /// an alias nobody holds is refused.
    pub fn new(model: impl Into<String>, alias: impl Into<String>) -> Self {
        ServeOptions {
            model: model.into(),
            alias: alias.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            poll: Some(Duration::from_secs(30)),
            bake: BakePolicy::default(),
            admin_token: std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()),
            max_body: 8 << 20,
            drain_delay: Duration::ZERO,
            wait_for_alias: false,
        }
    }
}

struct Shared {
    slot: Arc<Slot>,
    token: Option<String>,
    max_body: usize,
    draining: AtomicBool,
}

/// A bound model server: [`Server::bind`], then [`Server::run`].
pub struct Server {
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    poll: Option<Duration>,
    drain_delay: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.listener.local_addr().ok()).finish()
    }
}

impl Server {
    /// Binds the address; nothing is served until [`Server::run`].
    pub async fn bind(stack: Stack, loader: Loader, options: ServeOptions) -> crate::Result<Server> {
        crate::registry::validate_model_name(&options.model).map_err(|e| crate::Error::usage(e.to_string()))?;
        crate::registry::validate_alias(&options.alias).map_err(|e| crate::Error::usage(e.to_string()))?;
        let registry = stack.registry().map_err(|e| crate::Error::usage(e.to_string()))?;
        check_alias(registry, &options).await?;
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|e| crate::Error::usage(format!("cannot listen on {}: {e}", options.bind)))?;
        let slot = Arc::new(Slot::new(options.model, options.alias, stack, loader, options.bake));
        Ok(Server {
            listener,
            shared: Arc::new(Shared {
                slot,
                token: options.admin_token,
                max_body: options.max_body,
                draining: AtomicBool::new(false),
            }),
            poll: options.poll,
            drain_delay: options.drain_delay,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> crate::Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| crate::Error::usage(format!("the listener has no address: {e}")))
    }

    /// Serves until `shutdown` resolves (SIGTERM or Ctrl-C for the `serve`
    /// command): readiness turns false, it goes on serving for the drain
    /// delay ([`ServeOptions::drain_delay`]), stops accepting connections,
    /// finishes the requests in flight, then returns. The alias's version is loaded first thing; until it has
    /// passed warm-up, `/v2/health/ready` answers 503.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> crate::Result<()> {
        let shared = self.shared.clone();
        let poller = tokio::spawn(poll(shared.slot.clone(), self.poll));
        let app = router(shared.clone());
        let draining = shared.clone();
        let delay = self.drain_delay;
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                draining.draining.store(true, Ordering::SeqCst);
                if !delay.is_zero() {
                    tracing::info!(
                        "shutting down: not ready; serving {delay:?} more, until load balancers have seen it"
                    );
                    tokio::time::sleep(delay).await;
                }
                tracing::info!("shutting down: not ready, finishing the requests in flight");
            })
            .await;
        poller.abort();
        result.map_err(|e| crate::Error::usage(format!("the server stopped: {e}")))
    }
}

/// Refuses a model the registry does not know, and an alias nobody holds
/// unless the options say to wait for it: a server that would never be
/// ready is a typo to report, not a process to leave running.
async fn check_alias(registry: &dyn ModelRegistry, options: &ServeOptions) -> crate::Result<()> {
    let (model, alias) = (&options.model, &options.alias);
    let holder = match registry.resolve(model, alias).await {
        // Waiting covers a model whose first version is not registered yet.
        Err(RegistryError::UnknownModel { .. }) if options.wait_for_alias => None,
        other => other?,
    };
    match holder {
        Some(_) => Ok(()),
        None if options.wait_for_alias => {
            tracing::warn!("nobody holds `{model}`@{alias} yet: not ready until a version takes it");
            Ok(())
        }
        None => {
            let unheld = crate::registry::find_version(registry, model, &VersionRef::Alias(alias.clone()))
                .await
                .err()
                .map_or_else(|| format!("nobody holds `{model}`@{alias}"), |e| e.to_string());
            Err(crate::Error::usage(format!(
                "{unheld}; promote a version to it, or pass --wait-for-alias to serve it once one is"
            )))
        }
    }
}

/// Loads the alias's version at start, then follows the alias every `every`.
async fn poll(slot: Arc<Slot>, every: Option<Duration>) {
    let mut warned = false;
    loop {
        match slot.alias_holder().await {
            Ok(Some(v)) if slot.wants(v) => match slot.load(v).await {
                Ok(_) | Err(LoadError::Busy(_)) => {}
                Err(e) => tracing::warn!(model = %slot.name, "{e}"),
            },
            Ok(Some(_)) => {}
            Ok(None) if !warned => {
                warned = true;
                tracing::warn!(model = %slot.name, "no version holds the alias yet; waiting for one");
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(model = %slot.name, "looking up the alias: {e}"),
        }
        match every {
            Some(d) => tokio::time::sleep(d).await,
            None if slot.live().is_some() => return,
            // No poll asked for: still retry until something serves.
            None => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{m}", get(model_metadata))
        .route("/v2/models/{m}/ready", get(model_ready))
        .route("/v2/models/{m}/versions/{v}", get(version_metadata))
        .route("/v2/models/{m}/versions/{v}/ready", get(version_ready))
        .route("/v2/models/{m}/infer", post(infer))
        .route("/v2/models/{m}/versions/{v}/infer", post(infer_version))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{m}/load", post(repository_load))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint of the Open Inference Protocol") })
        .with_state(shared)
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// A refused request: its status and the `{"error"}` text.
struct Refusal(StatusCode, String);

impl Refusal {
    fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Refusal(status, message.to_string())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

type Answer = Result<Response, Refusal>;

impl Shared {
    fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.slot.live().is_some()
    }

    fn known(&self, model: &str) -> Result<(), Refusal> {
        if model == self.slot.name {
            return Ok(());
        }
        Err(Refusal::new(StatusCode::NOT_FOUND, format!("no model `{model}`; this server serves `{}`", self.slot.name)))
    }

    /// The live version of `model`.
    fn live(&self, model: &str) -> Result<Arc<Loaded>, Refusal> {
        self.known(model)?;
        self.slot.live().ok_or_else(|| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no version of `{}` has passed warm-up yet", self.slot.name),
            )
        })
    }

    /// Version `v` of `model`, if loaded.
    fn version(&self, model: &str, v: &str) -> Result<Arc<Loaded>, Refusal> {
        self.known(model)?;
        self.slot.version(v).ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("version {v} of `{}` is not loaded; loaded: {:?}", self.slot.name, self.slot.loaded_versions()),
            )
        })
    }

    /// The admin token, compared in constant time.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        use subtle::ConstantTimeEq;
        let Some(token) = &self.token else {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("admin calls are off: start `serve` with {TOKEN_ENV} set to turn them on"),
            ));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::new(StatusCode::UNAUTHORIZED, "admin calls need `Authorization: Bearer <the deploy token>`"))
        }
    }

    async fn body(&self, body: Body) -> Result<Bytes, Refusal> {
        axum::body::to_bytes(body, self.max_body).await.map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {} bytes", self.max_body),
            )
        })
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn ready(State(s): State<Arc<Shared>>) -> StatusCode {
    status(s.ready())
}

async fn server_metadata() -> Response {
    json(
        StatusCode::OK,
        &ServerMetadata {
            name: "zenflow".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into()],
        },
    )
}

fn metadata(s: &Shared, loaded: &Loaded, versions: Vec<String>) -> Response {
    json(
        StatusCode::OK,
        &ModelMetadata {
            name: s.slot.name.clone(),
            versions,
            platform: "zenflow".into(),
            inputs: loaded.signature.inputs.clone(),
            outputs: loaded.signature.outputs.clone(),
        },
    )
}

async fn model_metadata(State(s): State<Arc<Shared>>, Path(m): Path<String>) -> Answer {
    let live = s.live(&m)?;
    Ok(metadata(&s, &live, s.slot.loaded_versions()))
}

async fn version_metadata(State(s): State<Arc<Shared>>, Path((m, v)): Path<(String, String)>) -> Answer {
    let loaded = s.version(&m, &v)?;
    Ok(metadata(&s, &loaded, vec![loaded.version_str.clone()]))
}

async fn model_ready(State(s): State<Arc<Shared>>, Path(m): Path<String>) -> Answer {
    s.known(&m)?;
    Ok(status(s.ready()).into_response())
}

async fn version_ready(State(s): State<Arc<Shared>>, Path((m, v)): Path<(String, String)>) -> Answer {
    s.known(&m)?;
    Ok(status(!s.draining.load(Ordering::SeqCst) && s.slot.version(&v).is_some()).into_response())
}

async fn infer(State(s): State<Arc<Shared>>, Path(m): Path<String>, body: Body) -> Answer {
    // The version is fixed before the body is read: a swap meanwhile
    // does not move this request.
    let loaded = s.live(&m)?;
    answer(&s, loaded, body).await
}

async fn infer_version(State(s): State<Arc<Shared>>, Path((m, v)): Path<(String, String)>, body: Body) -> Answer {
    let loaded = s.version(&m, &v)?;
    answer(&s, loaded, body).await
}

async fn answer(s: &Shared, loaded: Arc<Loaded>, body: Body) -> Answer {
    let bytes = s.body(body).await?;
    let request = InferRequest::parse(&bytes).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e))?;
    let (request, result) = if loaded.is_slow() {
        let on = loaded.clone();
        tokio::task::spawn_blocking(move || {
            let result = on.predict(&request);
            (request, result)
        })
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the prediction did not finish: {e}")))?
    } else {
        let result = loaded.predict(&request);
        (request, result)
    };
    s.slot.record(&loaded, matches!(result, Err(PredictError::Failed(_))));
    let mut outputs = result.map_err(|e| match e {
        PredictError::Invalid(_) => Refusal::new(StatusCode::BAD_REQUEST, e),
        PredictError::Failed(_) => Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, e),
    })?;
    if let Some(wanted) = &request.outputs {
        if let Some(w) = wanted.iter().find(|w| !outputs.iter().any(|o| o.name == w.name)) {
            let gives: Vec<&str> = loaded.signature.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the request asks for output `{}`; the model gives {gives:?}", w.name),
            ));
        }
        outputs.retain(|o| wanted.iter().any(|w| w.name == o.name));
    }
    Ok(json(
        StatusCode::OK,
        &InferResponse {
            model_name: s.slot.name.clone(),
            model_version: loaded.version_str.clone(),
            id: request.id,
            outputs,
        },
    ))
}

async fn repository_index(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Answer {
    s.authorize(&headers)?;
    let mut rows: Vec<serde_json::Value> = s
        .slot
        .loaded_versions()
        .into_iter()
        .map(|v| serde_json::json!({"name": s.slot.name, "version": v, "state": "READY"}))
        .collect();
    if let Some(last) = s.slot.last_load().filter(|l| l.state != "READY") {
        rows.push(serde_json::to_value(last).unwrap_or_default());
    }
    Ok(json(StatusCode::OK, &rows))
}

/// `{"parameters": {"version": 5}}` (a number or a string).
fn requested_version(body: &[u8]) -> Result<i64, Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?;
    let v = value.get("parameters").and_then(|p| p.get("version"));
    let n = match v {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim_start_matches('v').parse().ok(),
        _ => None,
    };
    n.filter(|n| *n >= 1).ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "give the version to load: {\"parameters\": {\"version\": N}} with N a registered version (1, 2, ...)",
        )
    })
}

async fn repository_load(
    State(s): State<Arc<Shared>>,
    Path(m): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    s.authorize(&headers)?;
    s.known(&m)?;
    let version = requested_version(&s.body(body).await?)?;
    let outcome = s.slot.load(version).await.map_err(|e| match e {
        LoadError::Busy(_) => Refusal::new(StatusCode::CONFLICT, e),
        LoadError::NotFound(_) => Refusal::new(StatusCode::NOT_FOUND, e),
        LoadError::Failed { .. } => Refusal::new(StatusCode::BAD_REQUEST, e),
    })?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "name": s.slot.name,
            "version": version.to_string(),
            "state": "READY",
            "outcome": match outcome {
                LoadOutcome::Swapped => "swapped",
                LoadOutcome::AlreadyLive => "already_live",
                LoadOutcome::Restored => "restored",
            },
        }),
    ))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
