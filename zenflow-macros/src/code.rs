//! The step's code fingerprint ([`zenflow_fingerprint`]), with the package's
//! index built once per compilation of a crate rather than once per step.

use proc_macro2::TokenStream;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use zenflow_fingerprint::{Fingerprint, Project};

/// A package: its folder, name and version.
type Package = (PathBuf, String, String);

/// The crate being compiled, as cargo describes it to the compiler.
fn package() -> Option<Package> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let name = std::env::var("CARGO_PKG_NAME").ok()?;
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    Some((PathBuf::from(dir), name, version))
}

/// The fingerprint of the step `name` with signature and body `code`.
pub fn fingerprint(name: &str, code: TokenStream) -> Fingerprint {
    // One compiler process may expand several crates' macros (rust-analyzer
    // keeps one around), so the index is kept per package.
    static PROJECTS: OnceLock<Mutex<HashMap<Package, Arc<Project>>>> = OnceLock::new();
    let project = match package() {
        Some(key) => {
            let mut projects = PROJECTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
            let project = projects.entry(key.clone()).or_insert_with(|| {
                // Source files are lexed by proc-macro2's own lexer: the
                // compiler's would report their syntax errors (a trybuild
                // fixture, a file no target builds) as the user's.
                proc_macro2::fallback::force();
                // A library, binary or example cannot call into the
                // package's integration tests or benches: cargo sets
                // CARGO_TARGET_TMPDIR only when it compiles those.
                let skip: &[&str] =
                    if std::env::var_os("CARGO_TARGET_TMPDIR").is_some() { &[] } else { &["tests", "benches"] };
                let project = Project::load(&key.0, &key.1, &key.2, skip);
                proc_macro2::fallback::unforce();
                Arc::new(project)
            });
            Arc::clone(project)
        }
        // Built outside cargo: the step's own code, the compiler, no more.
        None => Arc::new(Project::default()),
    };
    project.fingerprint(name, code)
}
