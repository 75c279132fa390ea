use zenflow::prelude::*;

#[step(resources(memory = "4 gigs"))]
fn big() -> u32 {
    1
}

#[step(resources(cpus = 0))]
fn none() -> u32 {
    1
}

#[step(resources(disk = "1GiB"))]
fn disk() -> u32 {
    1
}

fn main() {}
