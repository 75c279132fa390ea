//! A Parquet table's first rows as values: what `artifacts cat` and
//! `artifacts head` show. Only those rows are decoded (feature `arrow`).

#[cfg(feature = "arrow")]
use arrow_array::{cast::AsArray, types::*, Array, RecordBatch};
#[cfg(feature = "arrow")]
use arrow_schema::DataType;
#[cfg(feature = "arrow")]
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

/// The first rows of a table: its column names, the rows (one JSON value
/// per cell), and how many rows the table has.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Head {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The first rows.
    pub rows: Vec<Vec<Value>>,
    /// How many rows the whole table has.
    pub total: u64,
}

/// The first `n` rows of the Parquet file `bytes`.
#[cfg(feature = "arrow")]
pub fn head(bytes: bytes::Bytes, n: usize) -> Result<Head, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let total = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let columns = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
    let reader = builder.with_limit(n).with_batch_size(n.max(1)).build().map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for batch in reader {
        rows.extend(batch_rows(&batch.map_err(|e| e.to_string())?));
    }
    rows.truncate(n);
    Ok(Head { columns, rows, total })
}

#[cfg(feature = "arrow")]
fn batch_rows(batch: &RecordBatch) -> Vec<Vec<Value>> {
    let columns: Vec<Vec<Value>> = batch.columns().iter().map(|a| column(a.as_ref())).collect();
    (0..batch.num_rows()).map(|row| columns.iter().map(|c| c[row].clone()).collect()).collect()
}

/// Every value of `array`; a categorical column's keys are resolved once.
#[cfg(feature = "arrow")]
fn column(array: &dyn Array) -> Vec<Value> {
    match array.as_any_dictionary_opt() {
        Some(d) if !d.values().is_empty() => {
            let keys = d.normalized_keys();
            let labels = d.values();
            let label = |row: usize| if array.is_null(row) { Value::Null } else { value(labels.as_ref(), keys[row]) };
            (0..array.len()).map(label).collect()
        }
        _ => (0..array.len()).map(|row| value(array, row)).collect(),
    }
}

#[cfg(feature = "arrow")]
/// The value at `row` of `array` as JSON: numbers, booleans and strings as
/// themselves, a category as its label, null as null, anything else by
/// its type.
pub fn value(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    macro_rules! num {
        ($t:ty) => {
            serde_json::json!(array.as_primitive::<$t>().value(row))
        };
    }
    match array.data_type() {
        DataType::Int8 => num!(Int8Type),
        DataType::Int16 => num!(Int16Type),
        DataType::Int32 => num!(Int32Type),
        DataType::Int64 => num!(Int64Type),
        DataType::UInt8 => num!(UInt8Type),
        DataType::UInt16 => num!(UInt16Type),
        DataType::UInt32 => num!(UInt32Type),
        DataType::UInt64 => num!(UInt64Type),
        DataType::Float32 => num!(Float32Type),
        DataType::Float64 => num!(Float64Type),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Dictionary(_, _) => match array.as_any_dictionary_opt() {
            Some(d) if !d.values().is_empty() => value(d.values().as_ref(), d.normalized_keys()[row]),
            _ => Value::Null,
        },
        other => Value::String(format!("<{other}>")),
    }
}

impl Head {
    /// The rows as an aligned text table, with a line saying how many rows
    /// the table has when not all are shown.
    pub fn to_text(&self) -> String {
        let cell = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "null".into(),
            other => other.to_string(),
        };
        let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
        let width = |i: usize| {
            let widest = cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            widest.max(self.columns[i].chars().count()).min(40)
        };
        let widths: Vec<usize> = (0..self.columns.len()).map(width).collect();
        let line = |values: &[String]| -> String {
            let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{:<w$}", clip(v, *w))).collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(&self.columns);
        for row in &cells {
            out.push_str(&line(row));
        }
        if (self.rows.len() as u64) < self.total {
            out.push_str(&format!("({} of {} rows)\n", self.rows.len(), self.total));
        }
        out
    }
}

/// `s` cut to `width` characters, the last one `…` when cut.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    s.chars().take(width.saturating_sub(1)).chain(std::iter::once('…')).collect()
}

#[cfg(all(test, feature = "arrow"))]
mod tests {
    use crate::materializer::encode;
    use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;

    #[test]
    fn the_first_rows_read_as_values_and_as_text() {
        let t = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("x", Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.0)])) as _),
            ("s", Arc::new(StringArray::from(vec!["a", "bb", "a very long string indeed"])) as _),
        ])
        .unwrap();
        let bytes = encode(&t).unwrap().encoded.bytes;
        let head = super::head(bytes, 2).unwrap();
        assert_eq!(head.total, 3);
        assert_eq!(
            head.rows,
            vec![vec![1.into(), 0.5.into(), "a".into()], vec![2.into(), serde_json::Value::Null, "bb".into()]]
        );
        assert_eq!(head.to_text(), "n  x     s\n1  0.5   a\n2  null  bb\n(2 of 3 rows)\n");
        assert!(super::head(bytes::Bytes::from_static(b"nope"), 2).is_err());
    }
}
