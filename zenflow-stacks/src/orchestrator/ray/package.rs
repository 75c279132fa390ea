//! The working-directory package a run ships to Ray: the pipeline binary
//! (executable) and the project's `zenflow.toml`, named by the hash of
//! both, so an unchanged binary is uploaded once and shared by every run.
//!
//! `zenflow.toml` goes as written: its `${VAR}` references are resolved by
//! each worker from its own environment, so no credential is in the package.

use std::io::Write as _;
use std::path::Path;

/// The binary's name inside the package (and the job's working folder).
pub const BINARY: &str = "zenflow-pipeline";

/// A package ready to upload.
pub struct Package {
    /// `_ray_pkg_zenflow_<hash>.zip`: the name Ray's `gcs://` URIs use.
    pub name: String,
    /// The zip's bytes.
    pub zip: Vec<u8>,
}

/// The package name for the binary and stack file bytes.
pub fn name(binary: &[u8], stack_file: &[u8]) -> String {
    let mut key = zenflow_core::hash::FieldHasher::new("zenflow.ray.package.v1");
    key.field(binary).field(stack_file);
    format!("_ray_pkg_zenflow_{}.zip", &key.finish().to_hex()[..32])
}

/// Reads the program and the stack file and zips them (blocking: run it
/// off the async threads).
pub fn build(program: &Path, project_root: &Path) -> Result<Package, String> {
    let binary =
        std::fs::read(program).map_err(|e| format!("cannot read the pipeline binary {}: {e}", program.display()))?;
    let stack_path = project_root.join(crate::config::STACK_FILE);
    let stack_file = std::fs::read(&stack_path).map_err(|e| {
        format!(
            "the ray orchestrator ships {} with the binary, so that workers open the same stack, and cannot read it: {e}",
            stack_path.display()
        )
    })?;
    let name = name(&binary, &stack_file);
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(binary.len() / 3)));
    let fail = |e: &dyn std::fmt::Display| format!("cannot build the package for Ray: {e}");
    // Level 1: most of the size win at a fraction of the time of the default.
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(binary.len() > u32::MAX as usize);
    zip.start_file(BINARY, options.unix_permissions(0o755)).map_err(|e| fail(&e))?;
    zip.write_all(&binary).map_err(|e| fail(&e))?;
    zip.start_file(crate::config::STACK_FILE, options.unix_permissions(0o644)).map_err(|e| fail(&e))?;
    zip.write_all(&stack_file).map_err(|e| fail(&e))?;
    let zip = zip.finish().map_err(|e| fail(&e))?.into_inner();
    Ok(Package { name, zip })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn the_package_keeps_the_executable_bit_and_is_named_by_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bin"), b"\x7fELF not really").unwrap();
        std::fs::write(dir.path().join("zenflow.toml"), "[stacks.x]\n").unwrap();
        let p = build(&dir.path().join("bin"), dir.path()).unwrap();
        assert!(
            p.name.starts_with("_ray_pkg_zenflow_") && p.name.ends_with(".zip") && p.name.len() == 53,
            "{}",
            p.name
        );
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(p.zip.clone())).unwrap();
        let mut bin = archive.by_name(BINARY).unwrap();
        assert_eq!(bin.unix_mode().map(|m| m & 0o777), Some(0o755));
        let mut bytes = Vec::new();
        bin.read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, b"\x7fELF not really");
        drop(bin);
        assert!(archive.by_name("zenflow.toml").is_ok());
        // Same bytes, same name; another stack file, another package.
        assert_eq!(build(&dir.path().join("bin"), dir.path()).unwrap().name, p.name);
        std::fs::write(dir.path().join("zenflow.toml"), "[stacks.y]\n").unwrap();
        assert_ne!(build(&dir.path().join("bin"), dir.path()).unwrap().name, p.name);
        let e = build(&dir.path().join("missing"), dir.path()).err().unwrap();
        assert!(e.contains("cannot read the pipeline binary"), "{e}");
    }
}
