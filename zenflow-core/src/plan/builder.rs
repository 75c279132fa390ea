//! Build mode: while a `#[pipeline]` body runs, step calls land here.
//!
//! The builder is thread-local and only exists during [`super::compile`]; the
//! body runs once, on the calling thread.

use crate::step::StepSpec;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// Where one input of an invocation comes from, while a pipeline is being built.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub enum InputBinding {
    /// One artifact.
    Single { node: usize, output: usize },
    /// Several artifacts of the same type, read as a `Vec` (fan-in).
    List(Vec<(usize, usize)>),
    /// The model version holding an alias when the step starts.
    Model(crate::plan::ModelInput),
}

pub(crate) struct Node {
    pub id: String,
    pub spec: &'static StepSpec,
    pub inputs: Vec<InputBinding>,
    pub params: Vec<Result<serde_json::Value, String>>,
    pub after: Vec<usize>,
    /// Where the body made the call, and where it named it (`.id(...)`).
    pub called_at: &'static std::panic::Location<'static>,
    pub named_at: Option<&'static std::panic::Location<'static>>,
    /// The id as given to `.id(...)`, before sanitising.
    pub given_id: Option<String>,
}

#[derive(Default)]
pub(crate) struct Builder {
    pub nodes: Vec<Node>,
    used_ids: HashSet<String>,
    counts: HashMap<&'static str, usize>,
}

thread_local! {
    static BUILDER: RefCell<Option<Builder>> = const { RefCell::new(None) };
}

/// Installs a fresh builder for the duration of `body`, then returns it
/// with what the body returned, or why it panicked.
pub(crate) fn with_builder<R>(body: impl FnOnce() -> R) -> (Builder, Result<R, String>) {
    let previous = BUILDER.with(|b| b.borrow_mut().replace(Builder::default()));
    if previous.is_some() {
        // A pipeline body that compiles another pipeline: keep the outer one.
        BUILDER.with(|b| *b.borrow_mut() = previous);
        return (Builder::default(), Err("a pipeline cannot be compiled from inside another pipeline's body".into()));
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let builder = BUILDER.with(|b| b.borrow_mut().take()).unwrap_or_default();
    (builder, outcome.map_err(crate::panic::message))
}

fn with<R>(f: impl FnOnce(&mut Builder) -> R) -> R {
    BUILDER.with(|b| match b.borrow_mut().as_mut() {
        Some(builder) => f(builder),
        None => panic!(
            "a zenflow step invocation was recorded outside a pipeline build; \
             step handles only work inside a #[pipeline] body compiled by zenflow"
        ),
    })
}

/// Records one invocation of `spec`; returns its node index.
#[doc(hidden)]
#[track_caller]
pub fn record(
    spec: &'static StepSpec,
    inputs: Vec<InputBinding>,
    params: Vec<Result<serde_json::Value, String>>,
) -> usize {
    let called_at = std::panic::Location::caller();
    with(|b| {
        let n = b.counts.entry(spec.name).or_insert(0);
        let mut id = spec.name.to_string();
        while !b.used_ids.insert(id.clone()) {
            *n += 1;
            id = format!("{}_{}", spec.name, *n + 1);
        }
        b.nodes.push(Node { id, spec, inputs, params, after: Vec::new(), called_at, named_at: None, given_id: None });
        b.nodes.len() - 1
    })
}

/// Gives invocation `node` the id `id` (sanitised: characters other than
/// `[A-Za-z0-9_-]` become `_`), named at `at`.
pub(crate) fn set_id(node: usize, id: String, at: &'static std::panic::Location<'static>) {
    with(|b| {
        if let Some(n) = b.nodes.get_mut(node) {
            n.id = sanitize_id(&id);
            n.given_id = Some(id);
            n.named_at = Some(at);
        }
    })
}

/// An invocation id made of `[A-Za-z0-9_-]` only (the names of artifacts,
/// `--set steps.<id>` paths and Argo's templates all build on it).
pub fn sanitize_id(id: &str) -> String {
    id.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

pub(crate) fn add_after(node: usize, upstream: Vec<usize>) {
    with(|b| {
        if let Some(n) = b.nodes.get_mut(node) {
            n.after.extend(upstream);
        }
    })
}

/// `invocation.output` for Debug output of handles.
pub(crate) fn describe(node: usize, output: Option<usize>) -> String {
    BUILDER.with(|b| {
        let b = b.borrow();
        let Some(n) = b.as_ref().and_then(|b| b.nodes.get(node)) else {
            return format!("#{node}");
        };
        match output.and_then(|o| n.spec.outputs.get(o)) {
            Some(o) => format!("{}.{}", n.id, o.name),
            None => n.id.clone(),
        }
    })
}
