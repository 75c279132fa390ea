//! Arrow record batches as Parquet files (zstd), which pandas, pyarrow,
//! polars and DuckDB read as they are; their schema and column statistics
//! go into the record ([`TableSummary`]).

use super::columns::TableSummary;
use super::{ArtifactMetadata, Encoded, Materialize, MaterializeError, Materializer};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{WriterProperties, WriterVersion};
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// Rows per Parquet row group: what is encoded (and held) at once while a
/// table streams to the store.
const ROW_GROUP: usize = 1 << 20;

/// Materializer for `arrow_array::RecordBatch`: one Parquet file, zstd
/// compressed, with the Arrow schema inside (so types such as dictionaries
/// come back as they were).
pub struct ParquetMaterializer;

impl Materializer for ParquetMaterializer {
    type Value = RecordBatch;
    const ID: &'static str = "zenflow.parquet";
    // Bump it when the bytes written change (a new parquet crate that
    // encodes differently, another setting): it is in every cache key.
    const VERSION: u32 = 1;
    // Not the very value: Parquet re-numbers dictionaries, drops schema
    // metadata and run-end encoding. A consumer in the same process must
    // see what a consumer of the cache sees, so it decodes too.
    const EXACT: bool = false;

    fn save(value: &RecordBatch) -> Result<Encoded, MaterializeError> {
        let mut buf = Vec::new();
        Self::save_to(value, &mut buf)?;
        Ok(Encoded::new("parquet", buf))
    }

    fn stream_hint(value: &RecordBatch) -> Option<(&'static str, u64)> {
        Some(("parquet", value.get_array_memory_size() as u64))
    }

    /// Row group by row group: only one encoded row group is held at once.
    fn save_to(value: &RecordBatch, out: &mut dyn Write) -> Result<(), MaterializeError> {
        let spool = Spool::default();
        // Every setting that shapes the bytes is pinned, the writer's name
        // too (by default it carries the crate's version): the same table
        // must give the same bytes, so the same content hash, everywhere.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).map_err(MaterializeError::encode::<Self>)?))
            .set_writer_version(WriterVersion::PARQUET_1_0)
            .set_max_row_group_row_count(Some(ROW_GROUP))
            .set_created_by(format!("{} v{}", Self::ID, Self::VERSION))
            .build();
        let mut writer = ArrowWriter::try_new(spool.clone(), value.schema(), Some(props))
            .map_err(MaterializeError::encode::<Self>)?;
        let mut offset = 0;
        while offset < value.num_rows() {
            let len = ROW_GROUP.min(value.num_rows() - offset);
            writer.write(&value.slice(offset, len)).map_err(MaterializeError::encode::<Self>)?;
            writer.flush().map_err(MaterializeError::encode::<Self>)?;
            spool.drain_into(out).map_err(MaterializeError::encode::<Self>)?;
            offset += len;
        }
        writer.close().map_err(MaterializeError::encode::<Self>)?;
        spool.drain_into(out).map_err(MaterializeError::encode::<Self>)
    }

    fn load(encoded: Encoded) -> Result<RecordBatch, MaterializeError> {
        let fail = |e: parquet::errors::ParquetError| MaterializeError::decode::<Self>(&encoded.format, e);
        let builder = ParquetRecordBatchReaderBuilder::try_new(encoded.bytes.clone()).map_err(fail)?;
        let schema = builder.schema().clone();
        // A row group at a time (a batch that crosses into another row
        // group decodes dictionaries into plain values), then joined.
        let reader = builder.with_batch_size(ROW_GROUP).build().map_err(fail)?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| fail(e.into()))?;
        match batches.len() {
            0 => Ok(RecordBatch::new_empty(schema)),
            1 => Ok(batches.into_iter().next().unwrap_or_else(|| RecordBatch::new_empty(schema))),
            _ => arrow_select::concat::concat_batches(&batches[0].schema(), &batches)
                .map_err(|e| MaterializeError::decode::<Self>(&encoded.format, e)),
        }
    }

    fn metadata(value: &RecordBatch, encoded: &Encoded) -> ArtifactMetadata {
        TableSummary::describe(value).metadata(encoded.bytes.len() as u64)
    }
}

impl Materialize for RecordBatch {
    type Materializer = ParquetMaterializer;
}

/// What the Parquet writer writes, held until it is handed on: the writer
/// needs a sink it owns and may send between threads, which the store's is
/// not.
#[derive(Clone, Default)]
struct Spool(Arc<Mutex<Vec<u8>>>);

impl Spool {
    fn drain_into(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(&held)?;
        held.clear();
        Ok(())
    }
}

impl Write for Spool {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::materializer::{decode, encode};
    use arrow_array::types::Int32Type;
    use arrow_array::{DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;

    fn table(rows: usize) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 / 2.0))) as _),
            ("n", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i as i64))) as _),
            ("s", Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("row {}", i % 7)))) as _),
            ("c", Arc::new(DictionaryArray::<Int32Type>::from_iter((0..rows).map(|i| ["a", "b"][i % 2]))) as _),
        ])
        .unwrap()
    }

    #[test]
    fn tables_round_trip_as_parquet_with_their_types() {
        for rows in [0, 1, 1000] {
            let t = table(rows);
            let e = encode(&t).unwrap();
            assert_eq!(&e.encoded.bytes[..4], b"PAR1", "a Parquet file");
            assert_eq!(e.encoded.format, "parquet");
            assert_eq!(e.metadata.shape, Some(vec![rows, 4]));
            assert_eq!(decode::<RecordBatch>(e.encoded).unwrap(), t, "{rows} rows, dictionary included");
        }
    }

    /// The bytes of a table are pinned: a change of the parquet crate or
    /// of a setting that changes them must bump the materializer's
    /// `VERSION` (and this hash), or every cached table would hash anew.
    #[test]
    fn the_same_table_gives_the_same_bytes() {
        let bytes = encode(&table(300)).unwrap().encoded.bytes;
        assert_eq!(crate::ContentHash::of(&bytes).to_hex(), GOLDEN, "{} bytes", bytes.len());
    }

    const GOLDEN: &str = "926f8f6244429448170a0b9521a4d511f8fc180dcb19bf935bbb33ae2957663a";

    /// More rows than a row group: the table is read back whole, its
    /// dictionary column a dictionary still.
    #[test]
    fn a_table_of_several_row_groups_reads_back_whole() {
        let t = table((1 << 20) + 1);
        let back = decode::<RecordBatch>(encode(&t).unwrap().encoded).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn bytes_that_are_not_parquet_are_a_decode_error() {
        let err = decode::<RecordBatch>(crate::materializer::Encoded::new("parquet", b"not parquet".to_vec()));
        let text = err.unwrap_err().to_string();
        assert!(text.contains("could not decode") && text.contains("parquet"), "{text}");
    }
}
