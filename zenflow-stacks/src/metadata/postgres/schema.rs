//! Schema identity and migrations of the PostgreSQL store.
//!
//! The schema and its migrations are the SQLite store's (one history for
//! both). The schema is checked on first use; a database with other tables
//! and no `zenflow_schema` is refused, and migrating happens under an
//! advisory lock, so a process that starts while another migrates waits for
//! it instead of racing it.

use super::{PgResult, PostgresMetadataStore};
use crate::metadata::migrations::{latest, MIGRATIONS};
use deadpool_postgres::Object;
use zenflow_core::metadata::MetadataError;

/// Key of the advisory lock that serialises migrations ("ZFLW").
const MIGRATION_LOCK: i64 = 0x5A46_4C57;

impl PostgresMetadataStore {
    /// Whether schema `version` is current; an error when it is newer than
    /// this build.
    fn check_version(&self, version: i64) -> PgResult<bool> {
        if version > latest() {
            return Err(MetadataError::NewerSchema {
                location: self.location.clone(),
                found: version,
                supported: latest(),
            });
        }
        Ok(version == latest())
    }

    pub(super) async fn migrate(&self, client: &mut Object) -> PgResult<()> {
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = current_schema() \
                 ORDER BY table_name",
                &[],
            )
            .await
            .map_err(|e| self.pg(e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tables.is_empty() && !tables.iter().any(|t| t == "zenflow_schema") {
            let mut shown = tables.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if tables.len() > 5 {
                shown.push_str(", ...");
            }
            return Err(MetadataError::NotZenflow {
                location: self.location.clone(),
                detail: format!("its schema holds other tables: {shown}"),
            });
        }
        if tables.iter().any(|t| t == "zenflow_schema") {
            // The common case: read-only, so a role without DDL rights works.
            let version: i64 = client
                .query_one("SELECT COALESCE(MAX(version), 0) FROM zenflow_schema", &[])
                .await
                .map_err(|e| self.pg(e))?
                .get(0);
            if self.check_version(version)? {
                return Ok(());
            }
            if self.read_only {
                return Err(MetadataError::OlderSchema {
                    location: self.location.clone(),
                    found: version,
                    supported: latest(),
                });
            }
        } else if self.read_only {
            return Err(MetadataError::Empty { location: self.location.clone() });
        }
        let tx = client.transaction().await.map_err(|e| self.pg(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| self.pg(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS zenflow_schema (version BIGINT NOT NULL)")
            .await
            .map_err(|e| self.pg(e))?;
        let version: i64 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM zenflow_schema", &[])
            .await
            .map_err(|e| self.pg(e))?
            .get(0);
        self.check_version(version)?;
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
            tx.batch_execute(sql).await.map_err(|e| self.err(format!("schema migration {v} failed: {e}")))?;
        }
        tx.execute("DELETE FROM zenflow_schema", &[]).await.map_err(|e| self.pg(e))?;
        tx.execute("INSERT INTO zenflow_schema (version) VALUES ($1)", &[&latest()]).await.map_err(|e| self.pg(e))?;
        tx.commit().await.map_err(|e| self.pg(e))
    }
}
