use zenflow::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct Model {
    weights: Vec<f64>,
}

#[step]
fn train(#[param] n: usize) -> Model {
    Model { weights: vec![0.0; n] }
}

fn main() {}
