use zenflow::prelude::*;

#[pipeline]
async fn later() {}

fn main() {}
