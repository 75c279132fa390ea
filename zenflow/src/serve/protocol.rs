//! The Open Inference Protocol's JSON (KServe V2 REST): tensors, infer
//! requests and responses, model metadata.
//!
//! A tensor's `data` may come flat (`[1, 2, 3, 4]`) or nested in row-major
//! order (`[[1, 2], [3, 4]]`); it is read flat, checked against `shape`
//! and `datatype`, and always written flat. Every way a request can be
//! wrong is a [`ProtocolError`] naming the tensor and what is off, which
//! the server answers with a 400.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A tensor's element type, as the protocol names it.
#[allow(missing_docs)] // the protocol's own names
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Datatype {
    BOOL,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
    INT8,
    INT16,
    INT32,
    INT64,
    FP16,
    FP32,
    FP64,
    BYTES,
}

impl Datatype {
    /// The protocol's name (`FP64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::BOOL => "BOOL",
            Datatype::UINT8 => "UINT8",
            Datatype::UINT16 => "UINT16",
            Datatype::UINT32 => "UINT32",
            Datatype::UINT64 => "UINT64",
            Datatype::INT8 => "INT8",
            Datatype::INT16 => "INT16",
            Datatype::INT32 => "INT32",
            Datatype::INT64 => "INT64",
            Datatype::FP16 => "FP16",
            Datatype::FP32 => "FP32",
            Datatype::FP64 => "FP64",
            Datatype::BYTES => "BYTES",
        }
    }

    /// Whether its elements are floating point numbers.
    pub fn is_float(self) -> bool {
        matches!(self, Datatype::FP16 | Datatype::FP32 | Datatype::FP64)
    }

    /// The range of an integer type, `None` for the others.
    fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Datatype::UINT8 => (0, u8::MAX.into()),
            Datatype::UINT16 => (0, u16::MAX.into()),
            Datatype::UINT32 => (0, u32::MAX.into()),
            Datatype::UINT64 => (0, u64::MAX.into()),
            Datatype::INT8 => (i8::MIN.into(), i8::MAX.into()),
            Datatype::INT16 => (i16::MIN.into(), i16::MAX.into()),
            Datatype::INT32 => (i32::MIN.into(), i32::MAX.into()),
            Datatype::INT64 => (i64::MIN.into(), i64::MAX.into()),
            _ => return None,
        })
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tensor's elements, flat in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `FP16`, `FP32`, `FP64`.
    Float(Vec<f64>),
    /// Every integer type (`UINT64` values above `i64::MAX` are refused).
    Int(Vec<i64>),
    /// `BOOL`.
    Bool(Vec<bool>),
    /// `BYTES`, as UTF-8 strings.
    Bytes(Vec<String>),
}

impl TensorData {
    /// How many elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Bytes(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Serialize for TensorData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // JSON has no NaN or infinity: they are written as null (what
            // serde_json does for non-finite floats).
            TensorData::Float(v) => v.serialize(s),
            TensorData::Int(v) => v.serialize(s),
            TensorData::Bool(v) => v.serialize(s),
            TensorData::Bytes(v) => v.serialize(s),
        }
    }
}

/// One input or output tensor: `{name, shape, datatype, data}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tensor {
    /// Its name.
    pub name: String,
    /// Its dimensions (each ≥ 0).
    pub shape: Vec<u64>,
    /// Its element type.
    pub datatype: Datatype,
    /// Its elements, flat.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor, checking that `shape` holds exactly the elements of `data`
    /// and that `data` fits `datatype`.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<u64>,
        datatype: Datatype,
        data: TensorData,
    ) -> Result<Self, ProtocolError> {
        let name = name.into();
        check_elements(&name, &shape, data.len())?;
        let fits = match (&data, datatype) {
            (TensorData::Float(_), d) => d.is_float(),
            (TensorData::Int(_), d) => d.int_range().is_some(),
            (TensorData::Bool(_), d) => d == Datatype::BOOL,
            (TensorData::Bytes(_), d) => d == Datatype::BYTES,
        };
        if !fits {
            return Err(ProtocolError::Invalid(format!("tensor `{name}`: its data does not fit datatype {datatype}")));
        }
        Ok(Tensor { name, shape, datatype, data })
    }
}

fn check_elements(name: &str, shape: &[u64], len: usize) -> Result<(), ProtocolError> {
    let expected = shape.iter().try_fold(1u64, |acc, d| acc.checked_mul(*d));
    if expected != Some(len as u64) {
        return Err(ProtocolError::Invalid(format!(
            "tensor `{name}`: shape {shape:?} holds {} elements, but its data has {len}",
            expected.map_or_else(|| "too many".to_string(), |n| n.to_string())
        )));
    }
    Ok(())
}

/// What is wrong with a request: the server answers 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The body is not JSON of the protocol's shape.
    #[error("the request body is not an inference request: {0}")]
    Malformed(String),
    /// A tensor is inconsistent (shape against data, data against datatype).
    #[error("{0}")]
    Invalid(String),
}

/// Elements as they come, before the datatype says what they must be.
#[derive(Debug)]
enum RawData {
    Numbers(Vec<Number>),
    Bools(Vec<bool>),
    Strings(Vec<String>),
    Empty,
}

#[derive(Debug, Clone, Copy)]
enum Number {
    Int(i128),
    Float(f64),
}

impl RawData {
    fn push_number(&mut self, n: Number) -> Result<(), &'static str> {
        match self {
            RawData::Empty => *self = RawData::Numbers(vec![n]),
            RawData::Numbers(v) => v.push(n),
            _ => return Err("data mixes numbers with other values"),
        }
        Ok(())
    }
}

/// Reads `data` flat from any nesting of arrays.
struct Flatten<'a>(&'a mut RawData);

impl<'de> de::DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers, booleans or strings (flat, or nested row-major)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let RawData::Empty = self.0 {
            if let Some(n) = seq.size_hint() {
                // Most tensors are numbers; reserve for them.
                *self.0 = RawData::Numbers(Vec::with_capacity(n));
            }
        }
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        if matches!(self.0, RawData::Numbers(v) if v.is_empty()) {
            *self.0 = RawData::Empty;
        }
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push_number(Number::Int(v.into())).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push_number(Number::Int(v.into())).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push_number(Number::Float(v)).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        match self.0 {
            RawData::Empty => *self.0 = RawData::Bools(vec![v]),
            RawData::Bools(b) => b.push(v),
            // `Numbers` reserved ahead of the first element, still empty.
            RawData::Numbers(n) if n.is_empty() => *self.0 = RawData::Bools(vec![v]),
            _ => return Err(E::custom("data mixes booleans with other values")),
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        match self.0 {
            RawData::Empty => *self.0 = RawData::Strings(vec![v.to_string()]),
            RawData::Strings(s) => s.push(v.to_string()),
            RawData::Numbers(n) if n.is_empty() => *self.0 = RawData::Strings(vec![v.to_string()]),
            _ => return Err(E::custom("data mixes strings with other values")),
        }
        Ok(())
    }
}

fn raw_data<'de, D: Deserializer<'de>>(d: D) -> Result<RawData, D::Error> {
    let mut raw = RawData::Empty;
    d.deserialize_any(Flatten(&mut raw))?;
    Ok(raw)
}

/// A tensor as the request writes it, before it is checked.
#[derive(Deserialize)]
struct RawTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(deserialize_with = "raw_data")]
    data: RawData,
}

impl RawTensor {
    fn check(self) -> Result<Tensor, ProtocolError> {
        let name = self.name;
        let datatype: Datatype = serde_json::from_value(serde_json::Value::String(self.datatype.clone()))
            .map_err(|_| {
                ProtocolError::Invalid(format!(
                    "tensor `{name}`: `{}` is not a datatype (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)",
                    self.datatype
                ))
            })?;
        let mut shape = Vec::with_capacity(self.shape.len());
        for d in &self.shape {
            let d = u64::try_from(*d).map_err(|_| {
                ProtocolError::Invalid(format!(
                    "tensor `{name}`: shape {:?} has a negative dimension (-1 is for model metadata, not requests)",
                    self.shape
                ))
            })?;
            shape.push(d);
        }
        let wrong =
            |found: &str| ProtocolError::Invalid(format!("tensor `{name}` is {datatype}, but its data holds {found}"));
        let data = match (self.data, datatype) {
            (RawData::Empty, d) => empty(d),
            (RawData::Numbers(v), d) if d.is_float() => TensorData::Float(
                v.into_iter()
                    .map(|n| match n {
                        Number::Int(i) => i as f64,
                        Number::Float(f) => f,
                    })
                    .collect(),
            ),
            (RawData::Numbers(v), d) => {
                let Some((lo, hi)) = d.int_range() else {
                    return Err(wrong("numbers"));
                };
                let mut out = Vec::with_capacity(v.len());
                for n in v {
                    let i = match n {
                        Number::Int(i) => i,
                        Number::Float(f) => return Err(wrong(&format!("the non-integer {f}"))),
                    };
                    if i < lo || i > hi || i > i128::from(i64::MAX) {
                        return Err(ProtocolError::Invalid(format!("tensor `{name}`: {i} is out of range for {d}")));
                    }
                    out.push(i as i64);
                }
                TensorData::Int(out)
            }
            (RawData::Bools(v), Datatype::BOOL) => TensorData::Bool(v),
            (RawData::Bools(_), _) => return Err(wrong("booleans")),
            (RawData::Strings(v), Datatype::BYTES) => TensorData::Bytes(v),
            (RawData::Strings(_), _) => return Err(wrong("strings")),
        };
        Tensor::new(name, shape, datatype, data)
    }
}

fn empty(d: Datatype) -> TensorData {
    match d {
        Datatype::BOOL => TensorData::Bool(Vec::new()),
        Datatype::BYTES => TensorData::Bytes(Vec::new()),
        d if d.is_float() => TensorData::Float(Vec::new()),
        _ => TensorData::Int(Vec::new()),
    }
}

/// An output the request asks for, by name.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RequestedOutput {
    /// Its name.
    pub name: String,
}

#[derive(Deserialize)]
struct RawRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    inputs: Vec<RawTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

/// A checked inference request.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The request's id, echoed back.
    pub id: Option<String>,
    /// Its parameters.
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Its input tensors (names unique).
    pub inputs: Vec<Tensor>,
    /// The outputs it asks for (all when `None`).
    pub outputs: Option<Vec<RequestedOutput>>,
}

impl InferRequest {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let raw: RawRequest = serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        Self::checked(raw)
    }

    /// Parses and checks a request held as JSON (a stored sample request).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ProtocolError> {
        let raw: RawRequest = serde_json::from_value(value).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        Self::checked(raw)
    }

    fn checked(raw: RawRequest) -> Result<Self, ProtocolError> {
        let mut inputs: Vec<Tensor> = Vec::with_capacity(raw.inputs.len());
        for t in raw.inputs {
            let t = t.check()?;
            if inputs.iter().any(|i| i.name == t.name) {
                return Err(ProtocolError::Invalid(format!("input `{}` is given twice", t.name)));
            }
            inputs.push(t);
        }
        Ok(InferRequest { id: raw.id, parameters: raw.parameters, inputs, outputs: raw.outputs })
    }
}

/// An inference response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InferResponse {
    /// The model's name.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The output tensors.
    pub outputs: Vec<Tensor>,
}

/// An input or output a model declares: a variable dimension is `-1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub datatype: Datatype,
    /// Its dimensions; -1 where any size goes (the batch).
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// A tensor spec.
    pub fn new(name: impl Into<String>, datatype: Datatype, shape: impl Into<Vec<i64>>) -> Self {
        TensorSpec { name: name.into(), datatype, shape: shape.into() }
    }

    /// Rows of `width` f64 features: FP64 `[-1, width]`.
    pub fn rows_f64(name: impl Into<String>, width: usize) -> Self {
        Self::new(name, Datatype::FP64, [-1, width as i64])
    }

    /// One class label per row: INT64 `[-1]`.
    pub fn labels(name: impl Into<String>) -> Self {
        Self::new(name, Datatype::INT64, [-1])
    }

    /// One probability per class per row: FP64 `[-1, classes]`.
    pub fn probabilities(name: impl Into<String>, classes: usize) -> Self {
        Self::new(name, Datatype::FP64, [-1, classes as i64])
    }

    /// Whether a tensor of `shape` fits this spec's shape.
    pub fn admits(&self, shape: &[u64]) -> bool {
        self.shape.len() == shape.len() && self.shape.iter().zip(shape).all(|(s, d)| *s < 0 || *s as u64 == *d)
    }
}

/// `GET /v2/models/{m}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// The model's name.
    pub name: String,
    /// The versions loaded (the live one first).
    pub versions: Vec<String>,
    /// What serves it.
    pub platform: String,
    /// Its inputs.
    pub inputs: Vec<TensorSpec>,
    /// Its outputs.
    pub outputs: Vec<TensorSpec>,
}

/// `GET /v2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The server.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The protocol extensions it speaks.
    pub extensions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<InferRequest, ProtocolError> {
        InferRequest::parse(body.as_bytes())
    }

    #[test]
    fn flat_and_nested_data_read_the_same() {
        let flat = parse(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP64","data":[1,2.5,3,4]}]}"#).unwrap();
        let nested =
            parse(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP64","data":[[1,2.5],[3,4]]}]}"#).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.inputs[0].data, TensorData::Float(vec![1.0, 2.5, 3.0, 4.0]));
    }

    #[test]
    fn integers_booleans_and_strings_by_datatype() {
        let r = parse(
            r#"{"id":"7","inputs":[
                {"name":"i","shape":[3],"datatype":"INT32","data":[1,-2,3]},
                {"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]},
                {"name":"s","shape":[1],"datatype":"BYTES","data":["hi"]},
                {"name":"e","shape":[0],"datatype":"UINT8","data":[]}]}"#,
        )
        .unwrap();
        assert_eq!(r.id.as_deref(), Some("7"));
        assert_eq!(r.inputs[0].data, TensorData::Int(vec![1, -2, 3]));
        assert_eq!(r.inputs[1].data, TensorData::Bool(vec![true, false]));
        assert_eq!(r.inputs[2].data, TensorData::Bytes(vec!["hi".into()]));
        assert_eq!(r.inputs[3].data, TensorData::Int(vec![]));
    }

    #[test]
    fn each_inconsistency_is_named() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP64","data":[1,2,3]}]}"#,
                "shape [1, 4] holds 4 elements, but its data has 3",
            ),
            (r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]}"#, "`FP99` is not a datatype"),
            (r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP64","data":[1]}]}"#, "negative dimension"),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1.5]}]}"#,
                "INT64, but its data holds the non-integer 1.5",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#,
                "300 is out of range for UINT8",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":["a"]}]}"#,
                "FP64, but its data holds strings",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}]}"#,
                "BOOL, but its data holds numbers",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1]},{"name":"x","shape":[1],"datatype":"FP64","data":[1]}]}"#,
                "input `x` is given twice",
            ),
        ];
        for (body, message) in cases {
            match parse(body) {
                Err(ProtocolError::Invalid(m)) => assert!(m.contains(message), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_bodies() {
        for body in [
            "",
            "{",
            "[]",
            r#"{"inputs":3}"#,
            r#"{"inputs":[{"name":"x"}]}"#,
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","data":[1,"a"]}]}"#,
        ] {
            assert!(matches!(parse(body), Err(ProtocolError::Malformed(_))), "{body}");
        }
    }

    #[test]
    fn specs_admit_variable_dimensions() {
        let spec = TensorSpec::rows_f64("x", 4);
        assert!(spec.admits(&[1, 4]) && spec.admits(&[100, 4]));
        assert!(!spec.admits(&[1, 3]) && !spec.admits(&[4]));
    }
}
