//! A step's code fingerprint, as `#[step]` computed it.

/// A step's code fingerprint (DESIGN.md §5): its own code, every item of
/// its workspace it can reach, its package's locked dependencies and the
/// compiler, as `#[step]` found them when it compiled the step.
#[derive(Debug, Clone, Copy)]
pub struct StepCode {
    /// blake3 (hex) of all of it: what the cache key holds.
    pub hash: &'static str,
    /// Each code item the step can reach with a short hash of its tokens,
    /// as [`crate::plan::Pairs`] text ("`kept_features` in src/features.rs"
    /// TAB "3f2a…" lines).
    pub items: &'static str,
    /// Name and exact version of every package the step's package depends
    /// on, as [`crate::plan::Pairs`] text.
    pub dependencies: &'static str,
    /// The compiler's version (`rustc -V`).
    pub compiler: &'static str,
}

impl StepCode {
    /// A fingerprint of the hash alone, for steps described by hand.
    pub const fn of_hash(hash: &'static str) -> StepCode {
        StepCode { hash, items: "", dependencies: "", compiler: "" }
    }
}
