//! Metadata stores.

pub mod migrations;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_tls;
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresMetadataStore;
pub use sqlite::{SqliteMetadataStore, Synchronous};
