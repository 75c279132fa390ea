//! The files of an SQLite store: the database, the `-wal` and `-shm` that
//! WAL mode keeps beside it, and the folder that holds them; how to open
//! them without writing, and what to say when they cannot be written.

use std::path::{Path, PathBuf};

/// `path` with `suffix` appended to its file name (`zenflow.db-wal`).
pub(super) fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The SQLite URI that opens `path` to read only. When this process may
/// not write the database and no writer left a `-wal` or `-shm` beside
/// it, the file is read as immutable: otherwise SQLite creates those two
/// with the database's own mode (read-only), and every writer after that
/// fails on them.
pub(super) fn read_only_uri(path: &Path) -> String {
    let companions = ["-wal", "-shm"].iter().any(|s| companion(path, s).exists());
    let immutable = if companions || writable(path) { "" } else { "&immutable=1" };
    format!("file:{}?mode=ro{immutable}", escape(&path.to_string_lossy()))
}

/// Whether this process may write the database at `path` and the `-wal`
/// and `-shm` files beside it (those that exist). Opening a database that
/// fails this read-write would create them with its read-only mode.
pub(super) fn writable(path: &Path) -> bool {
    may_write(path) && ["-wal", "-shm"].iter().map(|s| companion(path, s)).all(|c| !c.exists() || may_write(&c))
}

/// Whether this process may write `file`, asked without opening it: closing
/// any descriptor of a database file drops every POSIX lock this process
/// holds on it, the locks SQLite's other connections rely on.
#[cfg(unix)]
fn may_write(file: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(file.as_os_str().as_bytes()) else { return false };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn may_write(file: &Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| !m.permissions().readonly())
}

/// `path` as the path part of a URI (the characters that would end it or
/// start an escape, escaped).
fn escape(path: &str) -> String {
    path.replace('%', "%25").replace('?', "%3f").replace('#', "%23")
}

/// What to add to SQLite's "attempt to write a readonly database": every
/// file involved, with its mode and owner, and what to do.
pub(super) fn not_writable(path: &Path) -> String {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let files = [path.to_path_buf(), companion(path, "-wal"), companion(path, "-shm"), folder.to_path_buf()];
    let described: Vec<String> = files.iter().map(|f| describe(f)).collect();
    format!(
        "this process must be able to write all of: {}; fix their modes or owners, or use commands that only read \
         (runs, artifacts, models, stacks show, serve), which open the store read-only",
        described.join(", ")
    )
}

#[cfg(unix)]
fn describe(file: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(file) {
        Ok(m) => format!("{} (mode {:04o}, owner uid {})", file.display(), m.mode() & 0o7777, m.uid()),
        Err(_) => format!("{} (absent)", file.display()),
    }
}

#[cfg(not(unix))]
fn describe(file: &Path) -> String {
    match std::fs::metadata(file) {
        Ok(m) if m.permissions().readonly() => format!("{} (read-only)", file.display()),
        Ok(_) => format!("{} (writable)", file.display()),
        Err(_) => format!("{} (absent)", file.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_what_would_end_the_path() {
        assert_eq!(escape("/a b/100%?#.db"), "/a b/100%25%3f%23.db");
    }

    #[test]
    fn a_database_this_process_cannot_write_is_read_as_immutable_unless_a_writer_left_its_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("z.db");
        std::fs::write(&db, b"").unwrap();
        assert!(!read_only_uri(&db).contains("immutable"), "writable: read as a live database");
        let mut perms = std::fs::metadata(&db).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&db, perms).unwrap();
        // Root writes whatever the mode says: nothing to check then.
        if !may_write(&db) {
            assert!(read_only_uri(&db).ends_with("?mode=ro&immutable=1"), "{}", read_only_uri(&db));
            std::fs::write(companion(&db, "-wal"), b"").unwrap();
            assert!(read_only_uri(&db).ends_with("?mode=ro"), "a writer's WAL is read");
        }
        let said = not_writable(&db);
        assert!(said.contains("z.db (mode 0444"), "{said}");
        assert!(said.contains("z.db-shm (absent)"), "{said}");
    }
}
