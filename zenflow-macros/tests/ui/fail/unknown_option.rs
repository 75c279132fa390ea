use zenflow::prelude::*;

#[step(retry = 3)]
fn flaky(#[param] n: i64) -> i64 {
    n
}

fn main() {}
