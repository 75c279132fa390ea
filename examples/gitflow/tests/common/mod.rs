//! What both loop tests start from: a checkout of the template as a CI job
//! has it.

use std::path::Path;
use std::process::{Command, Output};

/// A temporary checkout: the template's configs, `stack_file` as its
/// `zenflow.toml`, and one commit (run names carry `{git_sha}`).
pub fn checkout(stack_file: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    std::fs::create_dir(dir.path().join("configs")).unwrap();
    for f in ["local.yaml", "staging.yaml", "production.yaml"] {
        std::fs::copy(configs.join(f), dir.path().join("configs").join(f)).unwrap();
    }
    std::fs::write(dir.path().join("zenflow.toml"), stack_file).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "ci")
            .env("GIT_AUTHOR_EMAIL", "ci@example.invalid")
            .env("GIT_COMMITTER_NAME", "ci")
            .env("GIT_COMMITTER_EMAIL", "ci@example.invalid")
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["commit", "-q", "--allow-empty", "-m", "the template"]);
    dir
}

/// What a command printed, stdout then stderr, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
