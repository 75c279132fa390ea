//! Steps: their static description, options, registry and calling convention.
//!
//! `#[step]` turns a function into a [`Step`]: a static [`StepSpec`] (name, code
//! hash, inputs, parameters, outputs, options) plus an `execute` function that
//! the step runner calls with loaded inputs. Every step is registered by name
//! in a link-time registry, so a binary can run any of its steps by name.

pub(crate) mod code;
pub(crate) mod options;

pub use code::StepCode;
pub use options::*;

use crate::context::StepContext;
use crate::materializer::{self, Encoded, EncodedValue, Materialize, MaterializeError};
use futures::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};

/// The error a step's code returns: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

/// An artifact input or output of a step.
#[derive(Clone, Debug)]
pub struct IoSpec {
    /// Argument or output name.
    pub name: &'static str,
    /// Rust type name of the value.
    pub type_name: &'static str,
    /// Id of the type's materializer.
    pub materializer: &'static str,
    /// Version of the type's materializer.
    pub materializer_version: u32,
}

impl IoSpec {
    /// Describes an input or output of type `T`.
    pub fn of<T: Materialize>(name: &'static str) -> Self {
        use crate::materializer::Materializer;
        IoSpec {
            name,
            type_name: std::any::type_name::<T>(),
            materializer: T::Materializer::ID,
            materializer_version: T::Materializer::VERSION,
        }
    }
}

/// A parameter of a step.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    /// Argument name.
    pub name: &'static str,
    /// Rust type name.
    pub type_name: &'static str,
    /// Checks that a JSON value (from a run config) fits the parameter's type.
    pub check: fn(&serde_json::Value) -> Result<(), String>,
}

impl ParamSpec {
    /// Describes a parameter of type `T`.
    pub fn of<T: DeserializeOwned>(name: &'static str) -> Self {
        ParamSpec { name, type_name: std::any::type_name::<T>(), check: check_param::<T> }
    }
}

/// Whether `value` deserialises as a `T`; the error says why not.
pub fn check_param<T: DeserializeOwned>(value: &serde_json::Value) -> Result<(), String> {
    T::deserialize(value).map(|_| ()).map_err(|e| e.to_string())
}

/// The signature of a step's generated execute function.
pub type ExecuteFn = fn(StepCall) -> BoxFuture<'static, Result<Vec<EncodedValue>, StepError>>;

/// Everything known about a step at compile time.
pub struct StepSpec {
    /// Registered name (the function name unless `name = "..."`).
    pub name: &'static str,
    /// Module that defines the step.
    pub module_path: &'static str,
    /// The step's code fingerprint, computed by the macro.
    pub code: StepCode,
    /// Manual cache bust: `#[step(version = "...")]`.
    pub version: Option<&'static str>,
    /// Artifact inputs in argument order.
    pub inputs: Vec<IoSpec>,
    /// Parameters in argument order.
    pub params: Vec<ParamSpec>,
    /// Outputs in order.
    pub outputs: Vec<IoSpec>,
    /// Options from the attribute.
    pub options: StepOptions,
    /// Runs the step body with loaded inputs.
    pub execute: ExecuteFn,
    /// How long the step's sync code took last time it ran in this process.
    pace: Pace,
}

impl StepSpec {
    /// What `#[step]` generates; not a stable API.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn __new(
        name: &'static str,
        module_path: &'static str,
        code: StepCode,
        version: Option<&'static str>,
        inputs: Vec<IoSpec>,
        params: Vec<ParamSpec>,
        outputs: Vec<IoSpec>,
        options: StepOptions,
        execute: ExecuteFn,
    ) -> StepSpec {
        StepSpec { name, module_path, code, version, inputs, params, outputs, options, execute, pace: Pace::default() }
    }
}

/// How long a step's sync code took the last time it ran in this process,
/// which decides how [`run_blocking`] runs it next.
#[derive(Debug)]
pub(crate) struct Pace {
    /// Nanoseconds; `u64::MAX` until it has run.
    last_ns: std::sync::atomic::AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { last_ns: std::sync::atomic::AtomicU64::new(u64::MAX) }
    }
}

impl Pace {
    /// Sync code that took less than this last time runs in place on the
    /// runtime's worker thread: holding a worker that briefly is cheaper
    /// than handing its other tasks to another thread first.
    pub(crate) const QUICK: Duration = Duration::from_micros(100);

    /// Whether the code finished within [`Pace::QUICK`] the last time it ran.
    pub(crate) fn quick(&self) -> bool {
        self.last_ns.load(std::sync::atomic::Ordering::Relaxed) < Self::QUICK.as_nanos() as u64
    }

    /// Records how long the code just took.
    pub(crate) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.store(ns, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for StepSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepSpec")
            .field("name", &self.name)
            .field("module_path", &self.module_path)
            .field("code", &self.code)
            .field("version", &self.version)
            .field("inputs", &self.inputs)
            .field("params", &self.params)
            .field("outputs", &self.outputs)
            .field("options", &self.options)
            .finish()
    }
}

/// A type generated by `#[step]`.
pub trait Step: 'static {
    /// The step's static description.
    fn spec() -> &'static StepSpec;
}

/// Entry of the link-time step registry (`inventory`).
#[doc(hidden)]
pub struct StepRegistration {
    pub spec: fn() -> &'static StepSpec,
}

inventory::collect!(StepRegistration);

static REGISTRY: LazyLock<HashMap<&'static str, Vec<&'static StepSpec>>> = LazyLock::new(|| {
    let mut map: HashMap<&'static str, Vec<&'static StepSpec>> = HashMap::new();
    for reg in inventory::iter::<StepRegistration> {
        let spec = (reg.spec)();
        map.entry(spec.name).or_default().push(spec);
    }
    map
});

/// Finds a registered step by name.
pub fn lookup(name: &str) -> Result<&'static StepSpec, StepError> {
    match REGISTRY.get(name).map(Vec::as_slice) {
        Some([spec]) => Ok(spec),
        Some(specs) if !specs.is_empty() => Err(StepError::AmbiguousName {
            step: name.to_string(),
            modules: specs.iter().map(|s| s.module_path.to_string()).collect(),
        }),
        _ => Err(StepError::NotRegistered { step: name.to_string() }),
    }
}

/// Names of every registered step, sorted.
pub fn registered_steps() -> Vec<&'static str> {
    let mut names: Vec<_> = REGISTRY.keys().copied().collect();
    names.sort_unstable();
    names
}

/// Why a step attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step's own code returned an error.
    #[error("{0}")]
    User(BoxError),
    /// The step's code panicked.
    #[error("the step panicked: {0}")]
    Panicked(String),
    /// An attempt ran longer than the step's `timeout`.
    #[error("the step did not finish within its timeout of {0:?}; raise `timeout` in #[step(...)] if it needs longer")]
    TimedOut(Duration),
    /// An input could not be read.
    #[error("could not read input `{input}`: {source}")]
    Input {
        /// Input name.
        input: String,
        /// Cause.
        source: MaterializeError,
    },
    /// An output could not be written.
    #[error("could not write output `{output}`: {source}")]
    Output {
        /// Output name.
        output: String,
        /// Cause.
        source: MaterializeError,
    },
    /// A parameter in the plan does not fit the step's parameter type.
    #[error("parameter `{param}` does not fit the step's parameter type `{type_name}`: {message}")]
    Param {
        /// Parameter name.
        param: String,
        /// Expected type.
        type_name: &'static str,
        /// What went wrong.
        message: String,
    },
    /// No step of that name is compiled into this binary.
    #[error(
        "no step named `{step}` is registered in this binary; is the plan from another program or an older build?"
    )]
    NotRegistered {
        /// Step name.
        step: String,
    },
    /// Several steps share one name.
    #[error("several steps are named `{step}` (in {}); give each a unique name with #[step(name = \"...\")]", modules.join(", "))]
    AmbiguousName {
        /// Step name.
        step: String,
        /// Modules that define a step with that name.
        modules: Vec<String>,
    },
}

/// An input as handed to a step: one artifact, or the artifacts of a fan-in.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum LoadedInput {
    Single(Encoded),
    List(Vec<Encoded>),
    /// Produced in this process: the value itself when the step asks for its
    /// type (once; a retry decodes the bytes), else the bytes.
    Value(Encoded, materializer::Handoff),
}

/// What the step runner hands to a step's execute function: its inputs (bytes
/// already loaded and verified), parameters and context.
#[doc(hidden)]
pub struct StepCall {
    spec: &'static StepSpec,
    inputs: Vec<Option<LoadedInput>>,
    params: Vec<Option<serde_json::Value>>,
    context: StepContext,
    /// The attempt's time limit, which the runner enforces.
    time_limit: Option<Duration>,
}

impl StepCall {
    /// Builds a call; `inputs` and `params` follow the spec's order.
    pub fn new(
        spec: &'static StepSpec,
        inputs: Vec<LoadedInput>,
        params: Vec<serde_json::Value>,
        context: StepContext,
    ) -> Self {
        StepCall {
            spec,
            inputs: inputs.into_iter().map(Some).collect(),
            params: params.into_iter().map(Some).collect(),
            context,
            time_limit: None,
        }
    }

    /// Tells the call that the runner stops waiting for it after `limit`
    /// (see [`run_blocking`]).
    pub fn with_time_limit(mut self, limit: Option<Duration>) -> Self {
        self.time_limit = limit;
        self
    }

    /// Decodes input `index` as a `T`.
    pub fn input<T: Materialize>(&mut self, index: usize) -> Result<T, StepError> {
        let name = self.spec.inputs.get(index).map_or("?", |s| s.name);
        let err = |source| StepError::Input { input: name.to_string(), source };
        match self.inputs.get_mut(index).and_then(Option::take) {
            Some(LoadedInput::Single(e)) => materializer::decode::<T>(e).map_err(err),
            Some(LoadedInput::Value(e, value)) => match value.take::<T>() {
                Some(v) => Ok(v),
                None => materializer::decode::<T>(e).map_err(err),
            },
            Some(LoadedInput::List(parts)) => T::from_parts(parts).map_err(err),
            None => Err(StepError::Param {
                param: name.to_string(),
                type_name: std::any::type_name::<T>(),
                message: "the runner did not supply this input".into(),
            }),
        }
    }

    /// Deserialises parameter `index` as a `T`.
    pub fn param<T: DeserializeOwned>(&mut self, index: usize) -> Result<T, StepError> {
        let name = self.spec.params.get(index).map_or("?", |s| s.name);
        let value = self.params.get_mut(index).and_then(Option::take).unwrap_or(serde_json::Value::Null);
        serde_json::from_value(value).map_err(|e| StepError::Param {
            param: name.to_string(),
            type_name: std::any::type_name::<T>(),
            message: e.to_string(),
        })
    }

    /// The step's context.
    pub fn context(&self) -> StepContext {
        self.context.clone()
    }
}

/// Encodes output `index` of `spec`.
#[doc(hidden)]
pub fn encode_output<T: Materialize>(spec: &StepSpec, index: usize, value: T) -> Result<EncodedValue, StepError> {
    materializer::encode_owned(value).map_err(|source| StepError::Output {
        output: spec.outputs.get(index).map_or("?", |o| o.name).to_string(),
        source,
    })
}

/// Converts what a step function returns into a result.
#[doc(hidden)]
pub fn user_result<T, E: Into<BoxError>>(r: Result<T, E>) -> Result<T, StepError> {
    r.map_err(|e| StepError::User(e.into()))
}

/// Runs the sync code of a step without stalling the runtime.
///
/// On a multi-threaded runtime the code runs in place, on the worker thread
/// that polls the step: no thread hop per step. Code that took less than
/// [`Pace::QUICK`] last time simply runs; other code runs after the worker
/// has handed its other tasks to another thread
/// (`tokio::task::block_in_place`), so a long step stalls nothing else. A
/// step with a time limit runs on a blocking thread instead, so the limit
/// can fire while its code runs; so does every step on a current-thread
/// runtime, where blocking in place is not possible.
#[doc(hidden)]
pub async fn run_blocking<R: Send + 'static>(
    call: &StepCall,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, StepError> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread && call.time_limit.is_none() {
        let pace = &call.spec.pace;
        let started = std::time::Instant::now();
        // A panic unwinds into the runner, which catches it.
        let r = if pace.quick() { f() } else { tokio::task::block_in_place(f) };
        pace.record(started.elapsed());
        return Ok(r);
    }
    // The blocking thread logs into the step's span too.
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(r) => Ok(r),
        Err(e) => Err(StepError::Panicked(crate::panic::join_message(e))),
    }
}

/// A step parameter type: serialisable, so it can go into the plan and the cache key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a step parameter: parameters must be serialisable",
    label = "this parameter type does not implement `Serialize` and `DeserializeOwned`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it, or make it an artifact input by removing `#[param]`"
)]
pub trait Param: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Param for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("1048576", Some(1 << 20)),
            ("512MiB", Some(512 << 20)),
            ("4GiB", Some(4 << 30)),
            ("2G", Some(2_000_000_000)),
            ("2GB", Some(2_000_000_000)),
            ("64KiB", Some(64 << 10)),
            ("1TiB", Some(1 << 40)),
            ("", None),
            ("GiB", None),
            ("4 GiB", None),
            ("4gib", None),
            ("4GIB", None),
            ("4Gi", None),
            ("1.5GiB", None),
            ("99999999999999999999", None),
            ("20000000TiB", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
    }
    use std::sync::mpsc;

    fn never_called(_: StepCall) -> BoxFuture<'static, Result<Vec<EncodedValue>, StepError>> {
        unreachable!("the test calls run_blocking directly")
    }

    fn call() -> StepCall {
        let spec: &'static StepSpec = Box::leak(Box::new(StepSpec {
            name: "s",
            module_path: "m",
            code: StepCode::of_hash("0000000000000000"),
            version: None,
            inputs: Vec::new(),
            params: Vec::new(),
            outputs: Vec::new(),
            options: StepOptions::default(),
            execute: never_called,
            pace: Pace::default(),
        }));
        StepCall::new(spec, Vec::new(), Vec::new(), StepContext::new("r", "p", "s", "s", 1))
    }

    #[test]
    fn code_counts_as_quick_only_after_a_quick_run() {
        let pace = Pace::default();
        assert!(!pace.quick(), "code that never ran is not known to be quick");
        pace.record(Duration::from_micros(5));
        assert!(pace.quick());
        pace.record(Pace::QUICK);
        assert!(!pace.quick(), "one slow run is enough to stop running it in place");
        pace.record(Duration::MAX);
        assert!(!pace.quick());
    }

    /// Sync code not known to be quick leaves the worker to the runtime's
    /// other tasks: here the only worker thread, which a task the code waits
    /// for needs. Once quick, it runs in place (and then that task waits).
    #[test]
    fn code_not_known_to_be_quick_leaves_the_runtime_free() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let call = call();
        let wait_for_task = || {
            let (tx, rx) = mpsc::channel();
            let task = tokio::spawn(async move { tx.send(()).unwrap() });
            (task, move || {
                let ran = rx.recv_timeout(Duration::from_secs(5)).is_ok();
                std::thread::sleep(Pace::QUICK * 2);
                ran
            })
        };
        // On the worker (block_on's own thread is not one).
        let on_worker = rt.spawn(async move {
            for round in ["first run", "after a slow run"] {
                let (task, waits) = wait_for_task();
                assert!(run_blocking(&call, waits).await.unwrap(), "{round}: the task never ran");
                task.await.unwrap();
                assert!(!call.spec.pace.quick(), "{round}: it took a while, so it is not quick");
            }
            assert_eq!(run_blocking(&call, || 7).await.unwrap(), 7);
            assert!(call.spec.pace.quick());
        });
        rt.block_on(on_worker).unwrap();
    }
}
