use zenflow::prelude::*;

#[step(model = "churn", outputs(a, b))]
fn train(#[param] n: u32) -> (u32, u32) {
    (n, n)
}

fn main() {}
