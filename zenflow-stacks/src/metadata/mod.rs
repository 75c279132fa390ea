//! Metadata stores: SQLite (embedded) and PostgreSQL (shared), over one
//! SQL layer (`metadata/sql`) that holds their statements and row mapping.

pub mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod sql;
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresMetadataStore, ROLES_SQL};
pub use sqlite::{SqliteMetadataStore, Synchronous, COMMIT_WINDOW};
