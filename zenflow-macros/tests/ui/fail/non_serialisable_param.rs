use zenflow::prelude::*;

struct Settings {
    depth: u32,
}

#[step]
fn train(#[param] settings: Settings) -> u32 {
    settings.depth
}

fn main() {}
