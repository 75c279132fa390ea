//! The SQL both metadata stores speak, written once.
//!
//! Statements ([`statements`]), column lists, the mapping of rows to
//! records ([`rows`]), the statements of a step-run write ([`write`]) and
//! the bookkeeping of group commits ([`batch`]) live here. A driver (SQLite,
//! PostgreSQL) implements [`SqlRow`] for its rows and binds [`Value`]s as its
//! parameters; it keeps only what really differs: connections, how
//! statements are sent (one by one, or pipelined), group commit, and
//! migration locking.
//!
//! Statements use `$1`, `$2`, ... placeholders. PostgreSQL reads them as
//! positions; SQLite reads them as names, numbered in the order they first
//! appear, so every statement names its parameters in ascending order of
//! first appearance (a test checks it).

pub(crate) mod batch;
pub(crate) mod delete;
pub(crate) mod registry;
pub(crate) mod rows;
pub(crate) mod statements;
pub(crate) mod write;

use zenflow_core::metadata::MetadataError;

/// A statement parameter, as both drivers bind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    /// `TEXT`.
    Text(Option<&'a str>),
    /// `INTEGER` / `BIGINT` (a driver narrows it to the column's width).
    Int(Option<i64>),
    /// `DOUBLE PRECISION`.
    Real(Option<f64>),
    /// `BYTEA` / `BLOB`.
    Blob(Option<&'a [u8]>),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Value::Text(v)
    }
}

impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Value::Text(v.as_deref())
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(Some(i64::from(v)))
    }
}

impl From<usize> for Value<'_> {
    fn from(v: usize) -> Self {
        Value::Int(Some(i64::try_from(v).unwrap_or(i64::MAX)))
    }
}

impl From<Option<f64>> for Value<'_> {
    fn from(v: Option<f64>) -> Self {
        Value::Real(v)
    }
}

/// A result row, read by column position.
pub(crate) trait SqlRow {
    /// A `TEXT` column that is never NULL.
    fn text(&self, i: usize) -> Result<String, MetadataError>;
    /// A nullable `TEXT` column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, MetadataError>;
    /// An integer column (any width) that is never NULL.
    fn int(&self, i: usize) -> Result<i64, MetadataError>;
    /// A nullable integer column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, MetadataError>;
    /// A nullable `DOUBLE PRECISION` column.
    fn opt_real(&self, i: usize) -> Result<Option<f64>, MetadataError>;
    /// A nullable `BYTEA` / `BLOB` column.
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, MetadataError>;
    /// A boolean (`EXISTS(...)`: PostgreSQL's `BOOLEAN`, SQLite's 0 or 1).
    fn flag(&self, i: usize) -> Result<bool, MetadataError>;

    /// A non-negative integer column that fits a `u32`.
    fn uint(&self, i: usize) -> Result<u32, MetadataError> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| MetadataError::Corrupt(format!("column {i} holds {v}, not a count")))
    }
}

/// A stored value that does not read back: the row is not what zenflow wrote.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> MetadataError {
    MetadataError::Corrupt(e.to_string())
}
