//! The code fingerprint of a zenflow step (DESIGN.md §5).
//!
//! A step's cache key must change whenever the code it runs may have
//! changed, with nothing for a person to remember. The fingerprint therefore
//! covers:
//!
//! - the step's own signature and body;
//! - every item of its package and of its path and workspace dependencies
//!   that the step can reach ([`items`]: by name, transitively, types with
//!   all their `impl` blocks);
//! - the exact version of every package it depends on, from `Cargo.lock`;
//! - the compiler's version.
//!
//! Comments, doc comments and formatting do not count. Code that is not Rust
//! (a data file read at run time) is an input of the step, not its code.
//!
//! `#[step]` computes it at compile time; the logic lives here, apart from
//! the macro, so that it can be tested on its own.

pub mod cargo;
pub mod items;
mod tokens;

use proc_macro2::TokenStream;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The compiler that built this crate, which is the compiler running any
/// proc macro that links it, and so the one building the fingerprinted code.
pub const COMPILER: &str = env!("ZENFLOW_RUSTC_VERSION");

/// zenflow's own crates, which [`Project::load`] keys by version, not by code.
pub const FRAMEWORK: &[&str] = &["zenflow", "zenflow-core", "zenflow-macros", "zenflow-stacks", "zenflow-fingerprint"];

/// What a step's code fingerprint is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// blake3 (hex) of everything below: the step's code hash.
    pub hash: String,
    /// Each item the step can reach, its own code first (labelled
    /// "`name` (the step)"), with a short hash of its tokens.
    pub items: Vec<(String, String)>,
    /// Name to exact version of every package the step's package depends on.
    pub dependencies: BTreeMap<String, String>,
    /// The compiler's version.
    pub compiler: String,
}

/// A package's indexed code and locked dependencies, loaded once and shared
/// by the fingerprints of all its steps.
#[derive(Debug, Default)]
pub struct Project {
    index: items::Index,
    dependencies: BTreeMap<String, String>,
}

impl Project {
    /// Indexes the package in `package_dir` (named `package` at `version`)
    /// with its path and workspace dependencies, and reads its locked
    /// dependencies. What cannot be read is left out: without a
    /// `Cargo.lock` (a build outside cargo) the versions are empty.
    ///
    /// zenflow's own crates ([`FRAMEWORK`]) are not indexed even where
    /// they are path dependencies: their code would tie every step to most
    /// of the framework by common names (`new`, `run`), and a user's build
    /// takes them from a registry, where their locked version covers them.
    ///
    /// `skip` names top-level folders of the package to leave out: a binary
    /// or a library cannot call into `tests/` or `benches/`. Of its
    /// dependencies only what they build for others is read (not their
    /// `tests`, `benches` or `examples`).
    pub fn load(package_dir: &Path, package: &str, version: &str, skip: &[&str]) -> Project {
        let lock_dir = cargo::lock_dir(package_dir);
        let label_root: PathBuf = lock_dir.clone().unwrap_or_else(|| package_dir.to_path_buf());
        let label_root = label_root.canonicalize().unwrap_or(label_root);
        let mut index = items::Index::default();
        let framework = |name: &str| FRAMEWORK.contains(&name);
        let own = package_dir.canonicalize().unwrap_or_else(|_| package_dir.to_path_buf());
        for dir in cargo::source_dirs(package_dir, lock_dir.as_deref(), &framework) {
            let skip: &[&str] = if dir == own { skip } else { &["tests", "benches", "examples"] };
            for file in cargo::rust_files(&dir, skip) {
                let Ok(source) = std::fs::read_to_string(&file) else { continue };
                let label = file.strip_prefix(&label_root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
                index.add_file(&label, &source);
            }
        }
        let dependencies = lock_dir.map(|d| cargo::locked_dependencies(&d, package, version)).unwrap_or_default();
        Project { index, dependencies }
    }

    /// A project of the given files (path, source) and dependency versions:
    /// for tests and tools that do not read a folder.
    pub fn from_sources<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
        dependencies: BTreeMap<String, String>,
    ) -> Project {
        let mut index = items::Index::default();
        for (path, source) in files {
            index.add_file(path, source);
        }
        Project { index, dependencies }
    }

    /// How many items the project's index holds.
    pub fn items(&self) -> usize {
        self.index.len()
    }

    /// The fingerprint of the step `name` whose own code (signature and
    /// body) is `code`.
    pub fn fingerprint(&self, name: &str, code: TokenStream) -> Fingerprint {
        let (own, roots) = items::mentions(code);
        let mut h = blake3::Hasher::new();
        let mut field = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"zenflow.code.v2");
        field(own.as_bytes());
        let mut items = vec![(format!("`{name}` (the step)"), short(own.as_bytes()))];
        for item in self.index.reach(name, &roots) {
            field(item.label.as_bytes());
            field(&item.hash);
            items.push((item.label.clone(), short(&item.hash)));
        }
        for (name, version) in &self.dependencies {
            field(name.as_bytes());
            field(version.as_bytes());
        }
        field(COMPILER.as_bytes());
        Fingerprint {
            hash: h.finalize().to_hex().to_string(),
            items,
            dependencies: self.dependencies.clone(),
            compiler: COMPILER.to_string(),
        }
    }
}

/// `pairs` as `key<TAB>value` lines sorted by key (tabs and newlines in
/// them turned into spaces; of two with one key the last wins): how
/// `#[step]` hands the items and dependencies of a fingerprint to the plan,
/// one string literal instead of hundreds of tuples to compile.
pub fn pairs_text<K: AsRef<str>, V: AsRef<str>>(pairs: impl IntoIterator<Item = (K, V)>) -> String {
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    let map: BTreeMap<String, String> =
        pairs.into_iter().map(|(k, v)| (clean(k.as_ref()), clean(v.as_ref()))).collect();
    map.into_iter().map(|(k, v)| format!("{k}\t{v}\n")).collect()
}

/// 16 hex digits: enough to tell two versions of one item apart.
fn short(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
