use zenflow::prelude::*;

#[step]
fn split(#[param] n: i64) -> (i64, i64) {
    (n, n)
}

fn main() {}
