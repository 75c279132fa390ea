use zenflow::prelude::*;

#[step]
fn name(#[param] n: i64) -> String {
    n.to_string()
}

#[step]
fn double(x: i64) -> i64 {
    x * 2
}

#[pipeline]
fn wiring() {
    let s = name(1);
    double(s);
}

fn main() {}
