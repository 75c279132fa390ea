//! Metadata stores.

pub mod migrations;
mod sqlite;

pub use sqlite::{SqliteMetadataStore, Synchronous};
