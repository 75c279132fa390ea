use zenflow::prelude::*;

#[step(timeout = "soon")]
fn slow(#[param] n: i64) -> i64 {
    n
}

fn main() {}
