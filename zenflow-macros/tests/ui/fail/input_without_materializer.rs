use zenflow::prelude::*;

struct Model {
    weights: Vec<f64>,
}

#[step]
fn score(model: Model) -> f64 {
    model.weights.iter().sum()
}

fn main() {}
