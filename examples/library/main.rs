//! zenflow as a library: a pipeline run from your own `main` with
//! `Pipeline::run`, its outputs read back typed, no command line.
//!
//! `cargo run --example library` (run it twice: the second run comes from
//! cache). State lives in `.zenflow/` at the project root, as for the
//! quickstart.

use serde::{Deserialize, Serialize};
use zenflow::prelude::*;

/// Points `(x, y)`.
#[derive(Debug, Serialize, Deserialize, Artifact)]
struct Points {
    x: Vec<f64>,
    y: Vec<f64>,
}

/// `y = slope * x + intercept`.
#[derive(Debug, Serialize, Deserialize, Artifact)]
struct Line {
    slope: f64,
    intercept: f64,
}

/// Noisy samples of `y = slope * x + 1`.
#[step]
fn samples(#[param] slope: f64, #[param] n: u32) -> Points {
    let x: Vec<f64> = (0..n).map(f64::from).collect();
    let y = x.iter().zip(0u32..).map(|(x, i)| slope * x + 1.0 + ((i * 7919) % 13) as f64 / 13.0 - 0.5).collect();
    Points { x, y }
}

/// Least squares.
#[step]
fn fit(points: Points, ctx: &StepContext) -> Result<Line, String> {
    let n = points.x.len() as f64;
    if n < 2.0 || points.y.len() != points.x.len() {
        return Err(format!("a line needs two points or more, of an x and a y each; got {n}"));
    }
    let (mx, my) = (points.x.iter().sum::<f64>() / n, points.y.iter().sum::<f64>() / n);
    let sxy: f64 = points.x.iter().zip(&points.y).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.x.iter().map(|x| (x - mx).powi(2)).sum();
    let slope = sxy / sxx;
    ctx.log_metadata("slope", slope);
    Ok(Line { slope, intercept: my - slope * mx })
}

/// Returns the fitted line: a run gives it back typed.
#[pipeline]
fn regression() -> Handle<Line> {
    let points = samples(2.5, 50);
    fit(points)
}

fn main() -> zenflow::Result<()> {
    let stack = zenflow::local_stack()?;
    let run = regression.run(&stack, &())?;
    let line = run.output()?;
    println!("y = {:.3} x + {:.3}", line.slope, line.intercept);
    println!("{} step(s) from cache; metadata in {}", run.cached().len(), stack.metadata().url());
    // A past run reads back the same way.
    let latest = regression.reopen(&stack, "latest")?;
    assert_eq!(latest.output()?.slope, line.slope);
    Ok(())
}
