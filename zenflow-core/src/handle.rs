//! Typed handles to step outputs inside a pipeline body.
//!
//! A step call in a `#[pipeline]` body does not run the step: it records an
//! invocation and returns [`Handle<T>`]s, one per output. Handles are
//! `Copy`; wiring one into another step's input records an edge, and the type
//! parameter makes a wrong wiring a compile error.
//!
//! **Invocation ids.** Each call is an invocation with an id, unique in the
//! plan: what `--set steps.<id>...`, `run.artifact(<id>, ...)` and the
//! reports use. An unnamed call gets its step's name; a second call of the
//! same step gets `<name>_2`, then `_3`, in the order the body makes them.
//! So reordering a loop renames its calls: name the calls whose position
//! can change with [`Handle::id`] (`train(data, lr).id(format!("train_lr_{lr}"))`).
//! Characters other than `[A-Za-z0-9_-]` become `_`; two calls with one id
//! are a plan error naming both call sites.

use crate::plan::builder::{self, InputBinding};
use std::fmt;
use std::marker::PhantomData;

/// A reference to one output of one step invocation, typed by its value.
pub struct Handle<T> {
    node: usize,
    output: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle<{}>({})", std::any::type_name::<T>(), builder::describe(self.node, Some(self.output)))
    }
}

impl<T> Handle<T> {
    #[doc(hidden)]
    pub fn __new(node: usize, output: usize) -> Self {
        Handle { node, output, _type: PhantomData }
    }

    /// Makes the step that produces this artifact run only after `upstream`,
    /// without passing data (ordering only). Returns the same handle.
    pub fn after(self, upstream: impl Upstream) -> Self {
        builder::add_after(self.node, upstream.nodes());
        self
    }

    /// The invocation that produces this artifact.
    pub fn invocation(&self) -> Invocation {
        Invocation(self.node)
    }

    /// Names the invocation that produces this artifact (see the module
    /// docs on invocation ids). Returns the same handle.
    #[track_caller]
    pub fn id(self, id: impl Into<String>) -> Self {
        builder::set_id(self.node, id.into(), std::panic::Location::caller());
        self
    }

    /// The builder node and output position (for [`crate::pipeline::Outputs`]).
    #[doc(hidden)]
    pub fn __position(&self) -> (usize, usize) {
        (self.node, self.output)
    }
}

/// A handle to a step invocation with no outputs, for ordering with
/// [`Handle::after`] / [`Invocation::after`].
#[derive(Clone, Copy)]
pub struct Invocation(usize);

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Invocation({})", builder::describe(self.0, None))
    }
}

impl Invocation {
    #[doc(hidden)]
    pub fn __new(node: usize) -> Self {
        Invocation(node)
    }

    /// Makes this invocation run only after `upstream` (ordering only).
    pub fn after(self, upstream: impl Upstream) -> Self {
        builder::add_after(self.0, upstream.nodes());
        self
    }

    /// Names this invocation (see the module docs on invocation ids).
    #[track_caller]
    pub fn id(self, id: impl Into<String>) -> Self {
        builder::set_id(self.0, id.into(), std::panic::Location::caller());
        self
    }
}

/// Anything that names invocations a step can be ordered after.
pub trait Upstream {
    /// The builder nodes of those invocations.
    #[doc(hidden)]
    fn nodes(&self) -> Vec<usize>;
}

impl<T> Upstream for Handle<T> {
    fn nodes(&self) -> Vec<usize> {
        vec![self.node]
    }
}
impl Upstream for Invocation {
    fn nodes(&self) -> Vec<usize> {
        vec![self.0]
    }
}
impl<U: Upstream> Upstream for &U {
    fn nodes(&self) -> Vec<usize> {
        (*self).nodes()
    }
}
impl<U: Upstream> Upstream for [U] {
    fn nodes(&self) -> Vec<usize> {
        self.iter().flat_map(U::nodes).collect()
    }
}
impl<U: Upstream> Upstream for Vec<U> {
    fn nodes(&self) -> Vec<usize> {
        self.iter().flat_map(U::nodes).collect()
    }
}
impl<A: Upstream, B: Upstream> Upstream for (A, B) {
    fn nodes(&self) -> Vec<usize> {
        let mut n = self.0.nodes();
        n.extend(self.1.nodes());
        n
    }
}
impl<A: Upstream, B: Upstream, C: Upstream> Upstream for (A, B, C) {
    fn nodes(&self) -> Vec<usize> {
        let mut n = self.0.nodes();
        n.extend(self.1.nodes());
        n.extend(self.2.nodes());
        n
    }
}

/// The version of a registered model that holds an alias, as an input of a
/// step whose parameter is an `Option<T>`: resolved when the step starts
/// (`None` when no version holds the alias), recorded as the step's input
/// in lineage, and part of its cache key, so a cached step never outlives a
/// promotion.
///
/// In a `#[pipeline]` body (the `zenflow` crate's registry guide,
/// `zenflow::docs::registry`, runs a whole example):
///
/// ```text
/// appraise(candidate, zenflow::model_alias("breast-cancer", "production"), test_set);
/// ```
pub struct ModelAlias<T> {
    input: crate::plan::ModelInput,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for ModelAlias<T> {
    fn clone(&self) -> Self {
        ModelAlias { input: self.input.clone(), _type: PhantomData }
    }
}

impl<T> fmt::Debug for ModelAlias<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelAlias({}@{})", self.input.model, self.input.alias)
    }
}

/// The version of model `model` holding `alias` when the step that takes it
/// starts (see [`ModelAlias`]).
pub fn model_alias<T>(model: impl Into<String>, alias: impl Into<String>) -> ModelAlias<T> {
    ModelAlias { input: crate::plan::ModelInput { model: model.into(), alias: alias.into() }, _type: PhantomData }
}

impl<T> IntoInput<Option<T>> for ModelAlias<T> {
    fn into_binding(self) -> InputBinding {
        InputBinding::Model(self.input)
    }
}

impl<T> IntoInput<Option<T>> for &ModelAlias<T> {
    fn into_binding(self) -> InputBinding {
        InputBinding::Model(self.input.clone())
    }
}

/// What can be wired into a step input of type `T`: an `Handle<T>`, or for a
/// `Vec<T>` input, a `Vec<Handle<T>>` (fan-in).
#[diagnostic::on_unimplemented(
    message = "this step input expects an artifact of type `{T}`, but got `{Self}`",
    label = "expected `Handle<{T}>` here",
    note = "inside a #[pipeline] body, step inputs are the `Handle<_>`s that other steps return; \
            check that the producing step's output type is `{T}`",
    note = "plain values belong in `#[param]` arguments"
)]
pub trait IntoInput<T> {
    /// Records where the input comes from.
    #[doc(hidden)]
    fn into_binding(self) -> InputBinding;
}

impl<T> IntoInput<T> for Handle<T> {
    fn into_binding(self) -> InputBinding {
        InputBinding::Single { node: self.node, output: self.output }
    }
}

impl<T> IntoInput<T> for &Handle<T> {
    fn into_binding(self) -> InputBinding {
        (*self).into_binding()
    }
}

impl<T> IntoInput<Vec<T>> for Vec<Handle<T>> {
    fn into_binding(self) -> InputBinding {
        self.as_slice().into_binding()
    }
}

impl<T> IntoInput<Vec<T>> for &Vec<Handle<T>> {
    fn into_binding(self) -> InputBinding {
        self.as_slice().into_binding()
    }
}

impl<T> IntoInput<Vec<T>> for &[Handle<T>] {
    fn into_binding(self) -> InputBinding {
        InputBinding::List(self.iter().map(|a| (a.node, a.output)).collect())
    }
}
