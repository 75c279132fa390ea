//! Commands that only read, on a store their user may not write, as an
//! operator meets it: the pipeline binary run as an unprivileged user
//! (`nobody` under `runuser` when the tests run as root, which ignores file
//! modes). They read without writing a byte, creating a file or migrating;
//! a command that writes says which files it cannot write, and leaves
//! nothing behind that would stop the next writer.

use std::path::Path;
use zenflow::stacks::metadata::migrations;
use zenflow_tests::project::{code, stderr, stdout, Project};

const DEMO: &str = env!("CARGO_BIN_EXE_demo_pipeline");

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The files in `.zenflow`, by name.
fn store_files(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.path(".zenflow"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn user_version(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
}

#[test]
fn an_empty_folder_says_there_are_no_runs_and_stays_empty() {
    let p = Project::new(DEMO);
    let out = p.cmd_unprivileged(&["runs", "list"]).output().unwrap();
    assert_eq!((code(&out), stdout(&out).as_str()), (0, "no runs yet here\n"), "{}", stderr(&out));
    let out = p.cmd_unprivileged(&["models", "list"]).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("no runs yet here: sqlite://"), "{}", stderr(&out));
    assert!(!p.path(".zenflow").exists(), "a read created the store's folder");
}

#[test]
fn a_store_its_user_cannot_write_is_read_and_left_as_it_was() {
    let p = Project::new(DEMO);
    let out = p.run(&["run", "-q", "--run-name", "first"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let before = store_files(&p);
    assert!(!before.iter().any(|f| f.ends_with("-wal") || f.ends_with("-shm")), "closed cleanly: {before:?}");
    // The database is read-only; its folder is not, so SQLite could
    // create its `-wal` and `-shm` there.
    chmod(&p.path(".zenflow/zenflow.db"), 0o444);
    chmod(&p.path(".zenflow"), 0o777);
    for args in [&["runs", "list"][..], &["runs", "show", "first"], &["artifacts", "list"]] {
        let out = p.cmd_unprivileged(args).output().unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
    }
    let listed = stdout(&p.cmd_unprivileged(&["runs", "list"]).output().unwrap());
    assert!(listed.lines().any(|l| l.starts_with("first") && l.contains("completed")), "{listed}");
    assert_eq!(store_files(&p), before, "reading created files");

    // A command that writes says which files it cannot write, and how
    // each is set; and creates nothing.
    let out = p.cmd_unprivileged(&["run", "-q"]).output().unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("zenflow.db (mode 0444, owner uid "), "{err}");
    assert!(err.contains("zenflow.db-wal (absent)") && err.contains(".zenflow (mode 0777"), "{err}");
    assert_eq!(store_files(&p), before, "a refused write left files behind");
    // Writable again, the store works for its owner at once.
    chmod(&p.path(".zenflow/zenflow.db"), 0o644);
    let out = p.run(&["run", "-q", "--run-name", "second"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn an_older_schema_is_refused_by_reads_with_the_command_that_migrates_it() {
    let p = Project::new(DEMO);
    let db = p.path(".zenflow/zenflow.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let older = migrations::latest() - 1;
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        for (_, sql) in migrations::MIGRATIONS.iter().filter(|(v, _)| *v <= older) {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", older).unwrap();
        conn.pragma_update(None, "application_id", 0x5A46_4C57).unwrap(); // "ZFLW": zenflow's
    }
    let out = p.cmd_unprivileged(&["runs", "list"]).output().unwrap();
    assert_eq!(code(&out), 2, "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("has metadata schema version {older}, older than this build's")), "{err}");
    assert!(err.contains("run `stacks check STACK` (it migrates the schema)"), "{err}");
    assert_eq!(user_version(&db), older, "a read migrated the store");
    let out = p.run(&["stacks", "check", "local"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(user_version(&db), migrations::latest());
    let out = p.cmd_unprivileged(&["runs", "list"]).output().unwrap();
    assert_eq!((code(&out), stdout(&out).lines().count()), (0, 1), "{}", stderr(&out));
}
