use zenflow::prelude::*;

#[step(outputs(train, train))]
fn split(#[param] n: i64) -> (i64, i64) {
    (n, n)
}

fn main() {}
