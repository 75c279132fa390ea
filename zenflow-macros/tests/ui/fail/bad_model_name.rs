use zenflow::prelude::*;

#[step(model = "churn model")]
fn train(#[param] n: u32) -> u32 {
    n
}

fn main() {}
