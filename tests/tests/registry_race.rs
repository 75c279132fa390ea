//! Two processes of eight threads race on one SQLite registry: promotions
//! with the same expectation (exactly one wins, the event log is linear),
//! and registrations of the same bytes (one version, numbers dense). The
//! service tier runs the same races on PostgreSQL.

use std::sync::Arc;
use zenflow_tests::registry_race::{races_hold, seed};

#[test]
fn two_processes_race_on_a_sqlite_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zenflow.db");
    let store = zenflow::stacks::SqliteMetadataStore::open(&path).unwrap();
    drop(seed(&store, 16));
    drop(store);
    races_hold(env!("CARGO_BIN_EXE_registry_race"), path.to_str().unwrap(), || {
        Arc::new(zenflow::stacks::SqliteMetadataStore::open(&path).unwrap())
    });
}
