//! Keeping what a step logs with its step run.
//!
//! Every attempt of a step runs inside a `tracing` span named
//! [`SPAN`] (level INFO, target
//! `zenflow.step.log`). [`layer`] hands every event inside such a span to
//! the step run's buffer, so `tracing::info!` in a step is kept with the step
//! run and shown by `runs show --logs` and the reports, next to
//! `StepContext::log` lines, in order. Records of the `log` crate count too
//! once `tracing-log`'s `LogTracer` forwards them (the command line and
//! [`install`] set it up).
//!
//! A pipeline binary's command line installs the layer itself. A program
//! with a subscriber of its own adds it:
//!
//! ```
//! use tracing_subscriber::prelude::*;
//!
//! tracing_subscriber::registry().with(zenflow::logs::layer()).try_init().ok();
//! ```
//!
//! Each step run keeps at most [`MAX_LINES`] lines and [`MAX_BYTES`] bytes;
//! a last line says how much was cut.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use zenflow_core::logs::{append, CONTEXT_TARGET};
pub use zenflow_core::logs::{stderr, MAX_BYTES, MAX_LINES, SPAN};

/// The layer that keeps events inside a step's span with its step run, at
/// INFO and above whatever other layers filter (its own filter: see
/// [`layer_with_level`]).
pub fn layer<S>() -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer_with_level(LevelFilter::INFO)
}

/// [`layer`], keeping events at `level` and above.
pub fn layer_with_level<S>(level: LevelFilter) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // The step's span is always let through, whatever the level, or its
    // events would have no step run to go to.
    let filter = Targets::new().with_target(CONTEXT_TARGET, Level::INFO).with_default(level);
    Capture.with_filter(filter.and(NotOwnEvents))
}

/// Installs a subscriber that only keeps step logs (nothing printed), and
/// `log` records forwarding, unless the program already has a global
/// subscriber. For tests and programs that do not set up `tracing`
/// themselves; returns whether it installed one.
pub fn install() -> bool {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry().with(layer()).try_init().is_ok()
}

/// The step run id a step span carries, kept in the span's extensions.
struct StepRun(String);

struct Capture;

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN {
            return;
        }
        let mut visitor = FindStepRun(None);
        attrs.record(&mut visitor);
        if let (Some(step_run), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(StepRun(step_run));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            if let Some(StepRun(step_run)) = span.extensions().get::<StepRun>() {
                append(step_run, format_event(event));
                return;
            }
        }
    }
}

/// Lets every span through but not zenflow's own events about what it
/// already keeps (`StepContext::log` lines, checks, retries).
struct NotOwnEvents;

impl<S> Filter<S> for NotOwnEvents {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.is_span() || meta.target() != CONTEXT_TARGET
    }
}

/// `WARN message key=value ...`; INFO lines carry no level, like
/// `StepContext::log` lines.
fn format_event(event: &Event<'_>) -> String {
    let mut line = String::new();
    let level = *event.metadata().level();
    if level != Level::INFO {
        let _ = write!(line, "{level} ");
    }
    let mut visitor = Line { line, fields: String::new() };
    event.record(&mut visitor);
    let Line { mut line, fields } = visitor;
    line.push_str(&fields);
    line
}

struct Line {
    line: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.line, "{value:?}");
            }
            // What `log` records carry besides their message.
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value:?}");
            }
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.line.push_str(value),
            name if name.starts_with("log.") => {}
            name => {
                let _ = write!(self.fields, " {name}={value}");
            }
        }
    }
}

struct FindStepRun(Option<String>);

impl Visit for FindStepRun {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "step_run" {
            self.0 = Some(format!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "step_run" {
            self.0 = Some(value.to_string());
        }
    }
}
