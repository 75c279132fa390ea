//! Records the compiler's version: a proc macro runs inside the very compiler
//! that built it, so this is the version of every crate it fingerprints.

use std::process::Command;

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(&rustc)
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc (unknown version)".into());
    println!("cargo:rustc-env=ZENFLOW_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
