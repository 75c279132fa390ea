//! The SQLite store refuses files it must not touch, and leaves them as they were.

use zenflow_core::metadata::MetadataError;
use zenflow_stacks::metadata::migrations;
use zenflow_stacks::SqliteMetadataStore;

fn open_err(path: &std::path::Path) -> MetadataError {
    SqliteMetadataStore::open(path).expect_err("opening must fail")
}

#[test]
fn creates_the_database_and_parent_folders_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/zenflow.db");
    SqliteMetadataStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, migrations::latest());
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    // Opening again is a no-op migration.
    SqliteMetadataStore::open(&path).unwrap();
}

#[test]
fn refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    let garbage = b"these are my notes, not a database; please keep them ".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    let err = open_err(&path);
    assert!(matches!(err, MetadataError::NotZenflow { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("notes.db") && msg.contains("not an SQLite database"), "{msg}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file must be left untouched");
}

#[test]
fn refuses_another_applications_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');",
        )
        .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = open_err(&path);
    zenflow_core::conformance::metadata::assert_not_zenflow(&err, "customers");
    assert!(err.to_string().contains("another application"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file must be left untouched");
    assert!(!dir.path().join("app.db-wal").exists(), "no WAL file was created");
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    SqliteMetadataStore::open(&path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", migrations::latest() + 1).unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = open_err(&path);
    zenflow_core::conformance::metadata::assert_newer_schema(&err, migrations::latest() + 1);
    assert!(matches!(err, MetadataError::NewerSchema { supported, .. } if supported == migrations::latest()));
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file must be left untouched");
}

#[test]
fn an_older_schema_is_migrated_in_place_keeping_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    {
        // A database as the first release wrote it, with one pipeline in it.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(migrations::MIGRATIONS[0].1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.pragma_update(None, "application_id", 0x5A46_4C57).unwrap();
        conn.execute("INSERT INTO pipelines (name, created_at) VALUES ('old', 1)", []).unwrap();
    }
    SqliteMetadataStore::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, migrations::latest());
    let pipelines: i64 = conn.query_row("SELECT COUNT(*) FROM pipelines WHERE name = 'old'", [], |r| r.get(0)).unwrap();
    assert_eq!(pipelines, 1, "existing records survive the migration");
    let checks: i64 = conn.query_row("SELECT COUNT(*) FROM checks", [], |r| r.get(0)).unwrap();
    assert_eq!(checks, 0, "the tables of later migrations exist");
}
