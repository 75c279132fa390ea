//! Arrow record batches as Parquet files (zstd), which pandas, pyarrow,
//! polars and DuckDB read as they are; their schema and column statistics
//! go into the record ([`TableSummary`]).

use super::columns::TableSummary;
use super::{ArtifactMetadata, Encoded, Materialize, MaterializeError, Materializer};
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
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
    const VERSION: u32 = 1;
    // The Arrow schema travels in the file: a batch reads back equal.
    const EXACT: bool = true;

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
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP))
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
        let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let schema = builder.schema().clone();
        // One batch for the whole table, as it was written.
        let reader = builder.with_batch_size(rows.max(1)).build().map_err(fail)?;
        let mut batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| fail(e.into()))?;
        match batches.len() {
            0 => Ok(RecordBatch::new_empty(schema)),
            1 => Ok(batches.remove(0)),
            n => Err(MaterializeError::decode::<Self>(&encoded.format, format!("{n} batches where one was written"))),
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

    #[test]
    fn streamed_bytes_are_the_saved_bytes() {
        use crate::materializer::Materializer;
        let t = table(300);
        let mut streamed = Vec::new();
        super::ParquetMaterializer::save_to(&t, &mut streamed).unwrap();
        assert_eq!(streamed, super::ParquetMaterializer::save(&t).unwrap().bytes.to_vec());
    }

    #[test]
    fn bytes_that_are_not_parquet_are_a_decode_error() {
        let err = decode::<RecordBatch>(crate::materializer::Encoded::new("parquet", b"not parquet".to_vec()));
        let text = err.unwrap_err().to_string();
        assert!(text.contains("could not decode") && text.contains("parquet"), "{text}");
    }
}
