//! What cargo knows about a package: the source folders of its path and
//! workspace dependencies (whose code a step can reach) and the exact
//! versions of everything it depends on (from `Cargo.lock`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folder holding `Cargo.lock` at or above `dir`: the workspace root
/// (or the package itself, when it is no workspace member).
pub fn lock_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|d| d.join("Cargo.lock").is_file()).map(Path::to_path_buf)
}

/// The folders of `package_dir` and of every path or workspace dependency it
/// has, transitively (dev- and build-dependencies included: over rather
/// than under), each once; a dependency whose package name `skip` accepts
/// is left out, with its own dependencies.
pub fn source_dirs(package_dir: &Path, workspace_dir: Option<&Path>, skip: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let workspace_deps = workspace_dir.map(workspace_dependencies).unwrap_or_default();
    let root = canonical(package_dir);
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut queue = vec![root.clone()];
    let mut dirs = Vec::new();
    while let Some(dir) = queue.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Some(manifest) = read_toml(&dir.join("Cargo.toml")) else {
            dirs.push(dir);
            continue;
        };
        let name = manifest.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()).unwrap_or("");
        if dir != root && skip(name) {
            continue;
        }
        queue.extend(path_dependencies(&dir, &manifest, &workspace_deps).iter().map(|d| canonical(d)));
        dirs.push(dir);
    }
    dirs
}

fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

fn read_toml(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

/// `[workspace.dependencies]` entries that are paths, by name, resolved
/// against the workspace root.
fn workspace_dependencies(root: &Path) -> BTreeMap<String, PathBuf> {
    let Some(manifest) = read_toml(&root.join("Cargo.toml")) else { return BTreeMap::new() };
    let Some(deps) = manifest.get("workspace").and_then(|w| w.get("dependencies")).and_then(|d| d.as_table()) else {
        return BTreeMap::new();
    };
    deps.iter().filter_map(|(name, spec)| Some((name.clone(), root.join(spec.get("path")?.as_str()?)))).collect()
}

/// The folders of the path dependencies `Cargo.toml` in `dir` names, in any
/// dependency table, target-specific ones included.
fn path_dependencies(dir: &Path, manifest: &toml::Table, workspace_deps: &BTreeMap<String, PathBuf>) -> Vec<PathBuf> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    let kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    for kind in kinds {
        tables.extend(manifest.get(kind).and_then(|t| t.as_table()));
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            for kind in kinds {
                tables.extend(target.get(kind).and_then(|t| t.as_table()));
            }
        }
    }
    let mut dirs = Vec::new();
    for (name, spec) in tables.into_iter().flatten() {
        if let Some(path) = spec.get("path").and_then(|p| p.as_str()) {
            dirs.push(dir.join(path));
        } else if spec.get("workspace").and_then(|w| w.as_bool()) == Some(true) {
            dirs.extend(workspace_deps.get(name).cloned());
        }
    }
    dirs
}

/// The `.rs` files under `dir`, sorted; folders that are packages of their
/// own (a `Cargo.toml` of theirs), `target`, hidden folders and the
/// top-level folders named in `skip` (`tests`, `benches`) are left out.
pub fn rust_files(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && skip.contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        files.extend(rust_files_in(&entry.path()));
    }
    files.sort();
    files
}

fn rust_files_in(top: &Path) -> Vec<PathBuf> {
    if top.is_file() {
        return if top.extension().is_some_and(|e| e == "rs") { vec![top.to_path_buf()] } else { Vec::new() };
    }
    let name = top.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name.starts_with('.') || name == "target" || top.join("Cargo.toml").is_file() {
        return Vec::new();
    }
    let mut files = Vec::new();
    let mut queue = vec![top.to_path_buf()];
    while let Some(d) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                let skip = name.starts_with('.') || name == "target" || path.join("Cargo.toml").is_file();
                if !skip {
                    queue.push(path);
                }
            } else if name.ends_with(".rs") {
                files.push(path);
            }
        }
    }
    files
}

/// One `[[package]]` of `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Locked {
    name: String,
    version: String,
    /// The git commit of a git dependency (its version may not change).
    commit: Option<String>,
    dependencies: Vec<String>,
}

/// The `[[package]]` tables of a `Cargo.lock`. Cargo writes the file in one
/// fixed layout, so it is read line by line: a TOML parser took most of the
/// time of a fingerprint.
fn locked_packages(lock: &str) -> Vec<Locked> {
    /// A `[[package]]` being read.
    #[derive(Default)]
    struct Partial {
        name: Option<String>,
        version: Option<String>,
        source: Option<String>,
        dependencies: Vec<String>,
    }
    let unquote = |v: &str| v.trim().trim_end_matches(',').trim_matches('"').to_string();
    let mut packages = Vec::new();
    let mut current: Option<Partial> = None;
    let mut in_dependencies = false;
    let mut finish = |p: Option<Partial>| {
        if let Some(Partial { name: Some(name), version: Some(version), source, dependencies }) = p {
            let commit = source.filter(|s| s.starts_with("git+")).and_then(|s| Some(s.split_once('#')?.1.to_string()));
            packages.push(Locked { name, version, commit, dependencies });
        }
    };
    for line in lock.lines().map(str::trim) {
        if in_dependencies {
            match line {
                "]" => in_dependencies = false,
                dep => current.iter_mut().for_each(|p| p.dependencies.push(unquote(dep))),
            }
            continue;
        }
        if line.starts_with('[') {
            finish(current.take());
            if line == "[[package]]" {
                current = Some(Partial::default());
            }
            continue;
        }
        let (Some(p), Some((key, value))) = (current.as_mut(), line.split_once(" = ")) else { continue };
        match key {
            "name" => p.name = Some(unquote(value)),
            "version" => p.version = Some(unquote(value)),
            "source" => p.source = Some(unquote(value)),
            "dependencies" if value.trim() == "[" => in_dependencies = true,
            "dependencies" => {
                let inner = value.trim().trim_start_matches('[').trim_end_matches(']');
                p.dependencies.extend(inner.split(',').map(unquote).filter(|d| !d.is_empty()));
            }
            _ => {}
        }
    }
    finish(current.take());
    packages
}

/// The exact version of every package `package` depends on, transitively,
/// as `Cargo.lock` in `lock_dir` resolved it: name to version (several
/// versions of one name are joined with `, `; a git dependency's version
/// carries its commit). Empty when there is no readable lock or the
/// package is not in it.
pub fn locked_dependencies(lock_dir: &Path, package: &str, version: &str) -> BTreeMap<String, String> {
    let Ok(lock) = std::fs::read_to_string(lock_dir.join("Cargo.lock")) else { return BTreeMap::new() };
    let packages = locked_packages(&lock);
    let mut by_name: std::collections::HashMap<&str, Vec<&Locked>> = std::collections::HashMap::new();
    for p in &packages {
        by_name.entry(p.name.as_str()).or_default().push(p);
    }
    let find = |spec: &str| -> Option<&Locked> {
        // A lock names a dependency "name", "name version" or "name version (source)".
        let mut parts = spec.split(' ');
        let name = parts.next()?;
        let version = parts.next();
        by_name.get(name)?.iter().copied().find(|p| version.is_none_or(|v| p.version == v))
    };
    let Some(root) = packages.iter().find(|p| p.name == package && p.version == version) else {
        return BTreeMap::new();
    };
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut queue: Vec<&Locked> = root.dependencies.iter().filter_map(|d| find(d)).collect();
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while let Some(p) = queue.pop() {
        if !seen.insert((&p.name, &p.version)) {
            continue;
        }
        let v = match &p.commit {
            Some(c) => format!("{} (git {c})", p.version),
            None => p.version.clone(),
        };
        versions.entry(p.name.clone()).or_default().insert(v);
        queue.extend(p.dependencies.iter().filter_map(|d| find(d)));
    }
    versions.into_iter().map(|(name, v)| (name, v.into_iter().collect::<Vec<_>>().join(", "))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, path: &str, text: &str) {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn finds_path_and_workspace_dependencies_transitively() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        write(r, "Cargo.toml", "[workspace]\nmembers = [\"app\", \"features\"]\n[workspace.dependencies]\nfeatures = { path = \"features\" }\n");
        write(r, "Cargo.lock", "version = 4\n");
        write(
            r,
            "app/Cargo.toml",
            "[package]\nname = \"app\"\n[dependencies]\nfeatures.workspace = true\nserde = \"1\"\n",
        );
        write(
            r,
            "features/Cargo.toml",
            "[package]\nname = \"features\"\n[target.'cfg(unix)'.dependencies]\nlow = { path = \"../low\" }\n",
        );
        write(
            r,
            "low/Cargo.toml",
            "[package]\nname = \"low\"\n[dev-dependencies]\napp = { path = \"../app\" }\n\
             skipped = { path = \"../skipped\" }\n",
        );
        write(
            r,
            "skipped/Cargo.toml",
            "[package]\nname = \"skipped\"\n[dependencies]\nbelow = { path = \"../below\" }\n",
        );
        write(r, "below/Cargo.toml", "[package]\nname = \"below\"\n");
        write(r, "app/src/main.rs", "fn main() {}");
        write(r, "app/target/x.rs", "fn built() {}");
        write(r, "app/nested/Cargo.toml", "[package]\nname = \"nested\"\n");
        write(r, "app/nested/src/lib.rs", "fn nested() {}");
        let lock = lock_dir(&r.join("app")).expect("the lock is found above the package");
        let dirs = source_dirs(&r.join("app"), Some(&lock), &|name| name == "skipped");
        let names: BTreeSet<String> =
            dirs.iter().map(|d| d.file_name().expect("a name").to_string_lossy().into_owned()).collect();
        assert_eq!(names, BTreeSet::from(["app".into(), "features".into(), "low".into()]));
        write(r, "app/tests/it.rs", "fn test_only() {}");
        let files = rust_files(&canonical(&r.join("app")), &["tests"]);
        assert_eq!(files, vec![canonical(&r.join("app/src/main.rs"))], "no target, no nested package, no tests");
        assert_eq!(rust_files(&canonical(&r.join("app")), &[]).len(), 2, "tests when asked");
    }

    #[test]
    fn locked_versions_are_transitive_and_exact() {
        let root = tempfile::tempdir().expect("tempdir");
        write(
            root.path(),
            "Cargo.lock",
            r#"version = 4
[[package]]
name = "app"
version = "0.1.0"
dependencies = ["smartcore", "rand 0.8.5", "features"]

[[package]]
name = "features"
version = "0.2.0"
dependencies = [
 "rand 0.9.1",
]

[[package]]
name = "smartcore"
version = "0.4.2"
source = "git+https://example.invalid/smartcore?rev=abc#abcdef0123"

[[package]]
name = "rand"
version = "0.8.5"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "rand"
version = "0.9.1"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "unrelated"
version = "1.0.0"
"#,
        );
        let deps = locked_dependencies(root.path(), "app", "0.1.0");
        let expected: BTreeMap<String, String> =
            [("features", "0.2.0"), ("rand", "0.8.5, 0.9.1"), ("smartcore", "0.4.2 (git abcdef0123)")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        assert_eq!(deps, expected);
        assert_eq!(locked_dependencies(root.path(), "features", "0.2.0").len(), 1);
        assert!(locked_dependencies(root.path(), "missing", "0.1.0").is_empty());
    }

    /// Read line by line, this workspace's own lock gives what a TOML parser does.
    #[test]
    fn the_line_reader_agrees_with_a_toml_parser() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(dir.join("Cargo.lock")).expect("the workspace lock");
        let table: toml::Table = text.parse().expect("TOML");
        let packages = table["package"].as_array().expect("packages");
        let read = locked_packages(&text);
        assert_eq!(read.len(), packages.len());
        for (p, r) in packages.iter().zip(&read) {
            assert_eq!(p["name"].as_str(), Some(r.name.as_str()));
            assert_eq!(p["version"].as_str(), Some(r.version.as_str()));
            let deps: Vec<&str> = p
                .get("dependencies")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            assert_eq!(deps, r.dependencies, "{}", r.name);
        }
    }
}
