//! The user's side of serving: [`Predict`], implemented by a model type,
//! and typed helpers for the common shapes (rows of f64 in; labels or
//! probabilities out) that check datatypes and shapes for it.

use super::protocol::{Datatype, InferRequest, Tensor, TensorData, TensorSpec};

/// What a model type implements to be served.
///
/// ```
/// use zenflow::serve::{Inputs, Prediction, Predict, PredictError, Signature, TensorSpec};
///
/// struct Threshold { at: f64 }
///
/// impl Predict for Threshold {
///     fn signature(&self) -> Signature {
///         Signature::new([TensorSpec::rows_f64("features", 2)], [TensorSpec::labels("label")])
///     }
///     fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError> {
///         let rows = inputs.rows_f64("features", 2)?;
///         Ok(Prediction::new().labels("label", rows.map(|r| i64::from(r[0] + r[1] > self.at))))
///     }
/// }
/// ```
pub trait Predict: Send + Sync + 'static {
    /// The tensors it takes and gives. A new version whose signature
    /// differs from the live one's is not swapped in.
    fn signature(&self) -> Signature;

    /// Answers one request. [`PredictError::Invalid`] is the caller's
    /// fault (a 400); [`PredictError::Failed`] the model's (a 500, counted
    /// against the version in its bake window).
    fn predict(&self, inputs: &Inputs) -> Result<Prediction, PredictError>;
}

/// A model's inputs and outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// What it takes.
    pub inputs: Vec<TensorSpec>,
    /// What it gives.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// A signature.
    pub fn new(inputs: impl IntoIterator<Item = TensorSpec>, outputs: impl IntoIterator<Item = TensorSpec>) -> Self {
        Signature { inputs: inputs.into_iter().collect(), outputs: outputs.into_iter().collect() }
    }

    /// What is wrong with it: no inputs or outputs, or a name twice.
    pub fn problems(&self) -> Option<String> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Some("a model must declare at least one input and one output".into());
        }
        for (kind, specs) in [("input", &self.inputs), ("output", &self.outputs)] {
            for (i, s) in specs.iter().enumerate() {
                if specs[..i].iter().any(|o| o.name == s.name) {
                    return Some(format!("{kind} `{}` is declared twice", s.name));
                }
            }
        }
        None
    }
}

/// Why a prediction gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictError {
    /// The request does not fit the model (a 400).
    #[error("{0}")]
    Invalid(String),
    /// The model could not answer (a 500).
    #[error("the model failed: {0}")]
    Failed(String),
}

/// A request's input tensors, by name.
#[derive(Debug)]
pub struct Inputs<'a> {
    request: &'a InferRequest,
}

impl<'a> Inputs<'a> {
    /// The inputs of a checked request.
    pub fn new(request: &'a InferRequest) -> Self {
        Inputs { request }
    }

    /// The input named `name`, or an error listing those given.
    pub fn tensor(&self, name: &str) -> Result<&'a Tensor, PredictError> {
        self.request.inputs.iter().find(|t| t.name == name).ok_or_else(|| {
            let given: Vec<&str> = self.request.inputs.iter().map(|t| t.name.as_str()).collect();
            PredictError::Invalid(format!("the model needs an input `{name}`; the request gives {given:?}"))
        })
    }

    /// Input `name` as rows of `width` floats: FP64 or FP32, shape
    /// `[n, width]` (or `[width]`, one row).
    pub fn rows_f64(&self, name: &str, width: usize) -> Result<Rows<'a>, PredictError> {
        let t = self.tensor(name)?;
        let TensorData::Float(data) = &t.data else {
            return Err(PredictError::Invalid(format!("input `{name}` must be FP64 (or FP32), not {}", t.datatype)));
        };
        let fits = match t.shape.as_slice() {
            [_, w] => *w == width as u64,
            [w] => *w == width as u64,
            _ => false,
        };
        if !fits || width == 0 {
            return Err(PredictError::Invalid(format!(
                "input `{name}` must have shape [n, {width}] (rows of {width} features), not {:?}",
                t.shape
            )));
        }
        Ok(Rows { chunks: data.chunks_exact(width) })
    }
}

/// Rows of an input, each a slice of its features.
#[derive(Debug, Clone)]
pub struct Rows<'a> {
    chunks: std::slice::ChunksExact<'a, f64>,
}

impl<'a> Iterator for Rows<'a> {
    type Item = &'a [f64];
    fn next(&mut self) -> Option<&'a [f64]> {
        self.chunks.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for Rows<'_> {}

/// A prediction's output tensors.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Prediction {
    pub(crate) tensors: Vec<Tensor>,
}

impl Prediction {
    /// No outputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor.
    pub fn tensor(mut self, tensor: Tensor) -> Self {
        self.tensors.push(tensor);
        self
    }

    /// Adds one INT64 label per row: shape `[n]`.
    pub fn labels(self, name: &str, labels: impl IntoIterator<Item = i64>) -> Self {
        let data: Vec<i64> = labels.into_iter().collect();
        let n = data.len() as u64;
        self.tensor(Tensor {
            name: name.into(),
            shape: vec![n],
            datatype: Datatype::INT64,
            data: TensorData::Int(data),
        })
    }

    /// Adds FP64 probabilities, one row of `classes` per input row: shape
    /// `[n, classes]`. Errors (a 500) when a row has another length.
    pub fn probabilities<R: AsRef<[f64]>>(
        self,
        name: &str,
        classes: usize,
        rows: impl IntoIterator<Item = R>,
    ) -> Result<Self, PredictError> {
        let mut data = Vec::new();
        let mut n = 0u64;
        for row in rows {
            let row = row.as_ref();
            if row.len() != classes {
                return Err(PredictError::Failed(format!(
                    "output `{name}`: a row of {} probabilities, not {classes}",
                    row.len()
                )));
            }
            data.extend_from_slice(row);
            n += 1;
        }
        Ok(self.tensor(Tensor {
            name: name.into(),
            shape: vec![n, classes as u64],
            datatype: Datatype::FP64,
            data: TensorData::Float(data),
        }))
    }

    /// The tensors.
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.tensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> InferRequest {
        InferRequest::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn rows_check_datatype_and_width() {
        let r = request(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#);
        let rows: Vec<&[f64]> = Inputs::new(&r).rows_f64("x", 2).unwrap().collect();
        assert_eq!(rows, vec![&[1.0, 2.0][..], &[3.0, 4.0][..]]);
        assert_eq!(
            Inputs::new(&r).rows_f64("x", 3).unwrap_err(),
            PredictError::Invalid("input `x` must have shape [n, 3] (rows of 3 features), not [2, 2]".into())
        );
        assert_eq!(
            Inputs::new(&r).rows_f64("y", 2).unwrap_err(),
            PredictError::Invalid("the model needs an input `y`; the request gives [\"x\"]".into())
        );
        let ints = request(r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT64","data":[1,2]}]}"#);
        assert_eq!(
            Inputs::new(&ints).rows_f64("x", 2).unwrap_err(),
            PredictError::Invalid("input `x` must be FP64 (or FP32), not INT64".into())
        );
    }

    #[test]
    fn outputs_have_their_shapes() {
        let out = Prediction::new().labels("label", [1, 0]).probabilities("p", 2, [[0.2, 0.8], [0.9, 0.1]]).unwrap();
        let t = out.into_tensors();
        assert_eq!((t[0].shape.clone(), t[0].datatype), (vec![2], Datatype::INT64));
        assert_eq!((t[1].shape.clone(), t[1].datatype), (vec![2, 2], Datatype::FP64));
        assert!(matches!(Prediction::new().probabilities("p", 3, [[0.5, 0.5]]), Err(PredictError::Failed(_))));
    }

    #[test]
    fn signature_problems() {
        assert!(Signature::new([], [TensorSpec::labels("y")]).problems().is_some());
        let twice =
            Signature::new([TensorSpec::rows_f64("x", 1), TensorSpec::rows_f64("x", 2)], [TensorSpec::labels("y")]);
        assert_eq!(twice.problems().as_deref(), Some("input `x` is declared twice"));
        assert_eq!(Signature::new([TensorSpec::rows_f64("x", 1)], [TensorSpec::labels("y")]).problems(), None);
    }
}
