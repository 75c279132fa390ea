//! The git commit of the project checkout, read from `.git` directly (no
//! process spawn: it is on the path of every run).

use std::fs;
use std::path::{Path, PathBuf};

/// The commit `HEAD` points at in the repository containing `start`, if any.
pub fn head_commit(start: &Path) -> Option<String> {
    let git_dir = find_git_dir(start)?;
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_sha(head).then(|| head.to_string());
    };
    // Worktrees keep refs in the common dir.
    let common = fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|| git_dir.clone());
    for dir in [&git_dir, &common] {
        if let Ok(s) = fs::read_to_string(dir.join(reference)) {
            let s = s.trim();
            if is_sha(s) {
                return Some(s.to_string());
            }
        }
    }
    let packed = fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name == reference && is_sha(sha)).then(|| sha.to_string())
    })
}

/// The branch `HEAD` is on in the repository containing `start`; `None`
/// for a detached `HEAD` (as CI checks commits out) or no repository.
pub fn head_branch(start: &Path) -> Option<String> {
    let head = fs::read_to_string(find_git_dir(start)?.join("HEAD")).ok()?;
    head.trim().strip_prefix("ref: refs/heads/").map(str::to_string)
}

fn find_git_dir(start: &Path) -> Option<PathBuf> {
    for dir in start.ancestors() {
        let dot_git = dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if let Ok(s) = fs::read_to_string(&dot_git) {
            let target = s.trim().strip_prefix("gitdir: ")?;
            return Some(dir.join(target));
        }
    }
    None
}

fn is_sha(s: &str) -> bool {
    s.len() >= 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_branch_packed_and_detached_heads() {
        let dir = std::env::temp_dir().join(format!("zf-git-{}", std::process::id()));
        let git = dir.join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(head_commit(&dir.join("sub/dir")), None, "unborn branch");
        fs::write(git.join("packed-refs"), format!("# pack-refs\n{sha} refs/heads/main\n")).unwrap();
        assert_eq!(head_commit(&dir).as_deref(), Some(sha));
        let sha2 = "1123456789abcdef0123456789abcdef01234567";
        fs::write(git.join("refs/heads/main"), format!("{sha2}\n")).unwrap();
        assert_eq!(head_commit(&dir).as_deref(), Some(sha2));
        assert_eq!(head_branch(&dir.join("sub")).as_deref(), Some("main"));
        fs::write(git.join("HEAD"), format!("{sha}\n")).unwrap();
        assert_eq!(head_commit(&dir).as_deref(), Some(sha));
        assert_eq!(head_branch(&dir), None, "detached");
        fs::remove_dir_all(&dir).unwrap();
    }
}
