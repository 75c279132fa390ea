//! What a table artifact records about itself: its schema, and per column
//! the nulls, the range and mean of numbers, and how many distinct values
//! strings hold. One pass over each column; read back from the record
//! ([`TableSummary::of`]) by `artifacts show` without the table's bytes.

use super::ArtifactMetadata;
#[cfg(feature = "arrow")]
use arrow_array::{cast::AsArray, types::*, Array, ArrowPrimitiveType, RecordBatch};
#[cfg(feature = "arrow")]
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};
#[cfg(feature = "arrow")]
use std::collections::HashSet;

#[cfg(feature = "arrow")]
/// Counting distinct values stops here: the count is then a lower bound
/// (`distinct_at_least`), and the memory it takes stays bounded.
const DISTINCT_CAP: usize = 100_000;

/// The schema and statistics of a table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableSummary {
    /// Rows.
    pub rows: u64,
    /// One entry per column, in order.
    pub columns: Vec<Column>,
}

/// One column: its schema and statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its Arrow type (`Int64`, `Utf8`, `Dictionary(Int32, Utf8)`, ...).
    pub data_type: String,
    /// Whether it may hold nulls.
    pub nullable: bool,
    /// How many of its values are null.
    pub nulls: u64,
    /// The smallest value, for numbers (NaN left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The largest value, for numbers (NaN left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The mean, for numbers (and the share of `true`, for booleans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// How many distinct values, for strings and categoricals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<u64>,
    /// Whether counting stopped at a cap: `distinct` is a lower bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub distinct_at_least: bool,
}

impl TableSummary {
    /// The summary of `batch`.
    #[cfg(feature = "arrow")]
    pub fn describe(batch: &RecordBatch) -> TableSummary {
        let schema = batch.schema();
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, array)| {
                let mut c = Column {
                    name: field.name().clone(),
                    data_type: field.data_type().to_string(),
                    nullable: field.is_nullable(),
                    nulls: array.logical_null_count() as u64,
                    min: None,
                    max: None,
                    mean: None,
                    distinct: None,
                    distinct_at_least: false,
                };
                measure(array.as_ref(), &mut c);
                c
            })
            .collect();
        TableSummary { rows: batch.num_rows() as u64, columns }
    }

    /// The summary a table artifact recorded (`extra["table"]`), if it is one.
    pub fn of(metadata: &ArtifactMetadata) -> Option<TableSummary> {
        serde_json::from_value(metadata.extra.get(TABLE_KEY)?.clone()).ok()
    }

    /// The artifact metadata of a table of `size` encoded bytes: shape
    /// `[rows, columns]`, a one-line summary, and this summary itself.
    pub fn metadata(&self, size: u64) -> ArtifactMetadata {
        let names: Vec<String> = self.columns.iter().take(6).map(|c| format!("{} {}", c.name, c.data_type)).collect();
        let more = if self.columns.len() > 6 { ", ..." } else { "" };
        let mut m = ArtifactMetadata {
            size,
            shape: Some(vec![self.rows as usize, self.columns.len()]),
            summary: Some(format!("{} rows × {} columns ({}{more})", self.rows, self.columns.len(), names.join(", "))),
            ..Default::default()
        };
        m.extra.insert(TABLE_KEY.into(), serde_json::to_value(self).unwrap_or_default());
        m
    }

    /// One line per column: name, type, nulls, min, max, mean, distinct.
    pub fn to_text(&self) -> String {
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{}", (v * 1e6).round() / 1e6));
        let rows: Vec<[String; 7]> = self
            .columns
            .iter()
            .map(|c| {
                let at_least = if c.distinct_at_least { "≥" } else { "" };
                let nullable = if c.nullable { "" } else { " not null" };
                [
                    c.name.clone(),
                    format!("{}{nullable}", c.data_type),
                    c.nulls.to_string(),
                    opt(c.min),
                    opt(c.max),
                    opt(c.mean),
                    c.distinct.map_or(String::new(), |d| format!("{at_least}{d}")),
                ]
            })
            .collect();
        let header = ["COLUMN", "TYPE", "NULLS", "MIN", "MAX", "MEAN", "DISTINCT"].map(String::from);
        let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..7).map(width).collect();
        let line = |r: &[String; 7]| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (v, w))| if i < 2 { format!("{v:<w$}") } else { format!("{v:>w$}") })
                .collect();
            cells.join("  ").trim_end().to_string() + "\n"
        };
        std::iter::once(&header).chain(&rows).map(line).collect()
    }
}

/// Where a table's summary is kept in its [`ArtifactMetadata::extra`].
pub const TABLE_KEY: &str = "table";

#[cfg(feature = "arrow")]
/// Fills in what `array`'s type allows: range and mean of numbers, the
/// share of `true`, distinct strings or categories.
fn measure(array: &dyn Array, c: &mut Column) {
    match array.data_type() {
        DataType::Int8 => numbers(array.as_primitive::<Int8Type>(), c),
        DataType::Int16 => numbers(array.as_primitive::<Int16Type>(), c),
        DataType::Int32 => numbers(array.as_primitive::<Int32Type>(), c),
        DataType::Int64 => numbers(array.as_primitive::<Int64Type>(), c),
        DataType::UInt8 => numbers(array.as_primitive::<UInt8Type>(), c),
        DataType::UInt16 => numbers(array.as_primitive::<UInt16Type>(), c),
        DataType::UInt32 => numbers(array.as_primitive::<UInt32Type>(), c),
        DataType::UInt64 => numbers(array.as_primitive::<UInt64Type>(), c),
        DataType::Float32 => numbers(array.as_primitive::<Float32Type>(), c),
        DataType::Float64 => numbers(array.as_primitive::<Float64Type>(), c),
        DataType::Boolean => {
            let b = array.as_boolean();
            let valid = (b.len() - b.null_count()) as f64;
            c.mean = (valid > 0.0).then(|| b.true_count() as f64 / valid);
        }
        DataType::Utf8 => distinct(array.as_string::<i32>().iter(), c),
        DataType::LargeUtf8 => distinct(array.as_string::<i64>().iter(), c),
        DataType::Utf8View => distinct(array.as_string_view().iter(), c),
        DataType::Dictionary(_, _) => categories(array, c),
        _ => {}
    }
}

#[cfg(feature = "arrow")]
/// Min, max and mean of the valid, non-NaN values.
fn numbers<T: ArrowPrimitiveType>(a: &arrow_array::PrimitiveArray<T>, c: &mut Column)
where
    T::Native: Into<Number>,
{
    let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0u64);
    let mut add = |v: T::Native| {
        let Number(v) = v.into();
        if !v.is_nan() {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
    };
    if a.null_count() == 0 {
        a.values().iter().for_each(|v| add(*v));
    } else {
        a.iter().flatten().for_each(add);
    }
    if n > 0 {
        (c.min, c.max, c.mean) = (Some(min), Some(max), Some(sum / n as f64));
    }
}

#[cfg(feature = "arrow")]
/// How many distinct values, up to [`DISTINCT_CAP`].
fn distinct<'a>(values: impl Iterator<Item = Option<&'a str>>, c: &mut Column) {
    let mut seen = HashSet::new();
    for v in values.flatten() {
        seen.insert(v);
        if seen.len() > DISTINCT_CAP {
            c.distinct_at_least = true;
            break;
        }
    }
    c.distinct = Some(seen.len() as u64);
}

#[cfg(feature = "arrow")]
/// A categorical column: how many of its dictionary's entries its rows use.
fn categories(array: &dyn Array, c: &mut Column) {
    let Some(dictionary) = array.as_any_dictionary_opt() else { return };
    if dictionary.values().is_empty() {
        // No categories at all (an empty table, or only nulls).
        c.distinct = Some(0);
        return;
    }
    let keys = dictionary.normalized_keys();
    let valid = (0..array.len()).filter(|i| array.is_valid(*i));
    let used: HashSet<usize> = valid.map(|i| keys[i]).collect();
    c.distinct = Some(used.len() as u64);
}

#[cfg(feature = "arrow")]
/// A number as `f64`, for statistics (64-bit integers beyond 2^53 round).
pub(crate) struct Number(f64);

#[cfg(feature = "arrow")]
macro_rules! number_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Number {
            #[allow(clippy::cast_lossless, clippy::cast_precision_loss)]
            fn from(v: $t) -> Number {
                Number(v as f64)
            }
        }
    )*};
}
#[cfg(feature = "arrow")]
number_from!(i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

#[cfg(all(test, feature = "arrow"))]
mod tests {
    use super::*;
    use arrow_array::{BooleanArray, DictionaryArray, Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn each_column_gets_what_its_type_allows() {
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(vec![Some(1.0), None, Some(3.0), Some(f64::NAN)])) as _),
            ("n", Arc::new(Int64Array::from(vec![4, -2, 10, 0])) as _),
            ("s", Arc::new(StringArray::from(vec![Some("a"), Some("b"), Some("a"), None])) as _),
            ("b", Arc::new(BooleanArray::from(vec![true, false, true, true])) as _),
            ("c", Arc::new(DictionaryArray::<Int32Type>::from_iter(["red", "red", "blue", "red"])) as _),
        ])
        .unwrap();
        let t = TableSummary::describe(&batch);
        assert_eq!(t.rows, 4);
        let col = |name: &str| t.columns.iter().find(|c| c.name == name).unwrap().clone();
        let x = col("x");
        assert_eq!((x.nulls, x.min, x.max, x.mean), (1, Some(1.0), Some(3.0), Some(2.0)), "NaN left out");
        assert_eq!(x.data_type, "Float64");
        let n = col("n");
        assert_eq!((n.min, n.max, n.mean, n.distinct), (Some(-2.0), Some(10.0), Some(3.0), None));
        assert_eq!((col("s").distinct, col("s").nulls), (Some(2), 1));
        assert_eq!(col("b").mean, Some(0.75));
        assert_eq!(col("c").distinct, Some(2));
        let m = t.metadata(99);
        assert_eq!((m.size, m.shape.clone()), (99, Some(vec![4, 5])));
        assert_eq!(TableSummary::of(&m), Some(t), "read back from the record");
    }
}
