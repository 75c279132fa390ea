use zenflow::prelude::*;

#[step]
fn identity<T: Clone>(x: T) -> T {
    x
}

fn main() {}
