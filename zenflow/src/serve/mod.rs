//! A model server inside the pipeline binary (feature `serve`): the
//! version of a registered model that holds an alias, served over the
//! Open Inference Protocol (KServe V2 REST), with zero-downtime swaps.
//!
//! A model type implements [`Predict`]; the binary opts in with one line:
//!
//! ```no_run
//! # use zenflow::prelude::*;
//! # use zenflow::serve::{Inputs, Prediction, Predict, PredictError, Signature, TensorSpec};
//! # #[derive(Clone, serde::Serialize, serde::Deserialize, Artifact)] struct Model;
//! # impl Predict for Model {
//! #     fn signature(&self) -> Signature { Signature::new([TensorSpec::rows_f64("x", 1)], [TensorSpec::labels("y")]) }
//! #     fn predict(&self, i: &Inputs) -> Result<Prediction, PredictError> { Ok(Prediction::new().labels("y", i.rows_f64("x", 1)?.map(|_| 0))) }
//! # }
//! # #[step] fn train() -> Model { Model }
//! # #[pipeline] fn training() -> Handle<Model> { train() }
//! fn main() -> std::process::ExitCode {
//!     zenflow::cli::Main::new(training).serve::<Model>().run()
//! }
//! ```
//!
//! and `serve --model NAME --alias production` then serves it. Endpoints:
//! `GET /v2/health/live`, `/v2/health/ready` (200 once a version has passed
//! warm-up; 503 while draining), `/v2`, `/v2/models/{m}`,
//! `/v2/models/{m}/ready`, `POST /v2/models/{m}/infer` and
//! `/v2/models/{m}/versions/{v}/infer`; and, with the admin token
//! (`Authorization: Bearer`), the repository extension's
//! `POST /v2/repository/models/{m}/load` (`{"parameters": {"version": N}}`)
//! and `POST /v2/repository/index`. Errors are `{"error": "..."}`.
//!
//! A version comes to serve (see [Loading](#loading)) fetched and
//! hash-verified, signature checked, warmed up with the sample requests
//! registered with it ([`crate::StepContext::model_sample`]), then swapped
//! in atomically; the previous version stays loaded through a bake window
//! and comes back if the new one fails too many requests.
//!
//! # Loading
//!
//! The server follows the alias two ways: the deployer's load call
//! ([`crate::deploy`]) and a poll of the registry (`--poll`). One load runs
//! at a time (a second is refused with 409). If any stage fails, the live
//! version keeps serving and the load answers 400 with the stage and reason.

mod predict;
mod protocol;
mod server;
mod slot;

pub use predict::{Inputs, Predict, PredictError, Prediction, Rows, Signature};
pub use protocol::{
    Datatype, InferRequest, InferResponse, ModelMetadata, ProtocolError, RequestedOutput, ServerMetadata, Tensor,
    TensorData, TensorSpec,
};
pub use server::{shutdown_signal, ServeOptions, Server, TOKEN_ENV};
pub use slot::{BakePolicy, LoadError, LoadOutcome, LoadState, Loader};
