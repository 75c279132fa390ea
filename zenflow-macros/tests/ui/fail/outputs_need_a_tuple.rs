use zenflow::prelude::*;

#[step(outputs(train, test))]
fn split(#[param] n: i64) -> i64 {
    n
}

fn main() {}
