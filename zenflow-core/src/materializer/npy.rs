//! `ndarray` arrays as `.npy` files (numpy's own format).

use super::{ArtifactMetadata, Encoded, Materialize, MaterializeError, Materializer};
use ndarray::{Array, Dimension};
use ndarray_npy::{ReadNpyExt, ReadableElement, WritableElement, WriteNpyExt};
use std::marker::PhantomData;

/// Materializer for `ndarray::Array<A, D>`: the `.npy` format, which
/// `numpy.load` reads as it is.
pub struct NpyMaterializer<A, D>(PhantomData<fn() -> (A, D)>);

impl<A, D> Materializer for NpyMaterializer<A, D>
where
    A: WritableElement + ReadableElement + Send + 'static,
    D: Dimension + 'static,
{
    type Value = Array<A, D>;
    const ID: &'static str = "zenflow.npy";
    const VERSION: u32 = 1;
    // `.npy` keeps every element, the shape and the element type.
    const EXACT: bool = true;

    fn save(value: &Array<A, D>) -> Result<Encoded, MaterializeError> {
        let mut buf = Vec::with_capacity(value.len() * std::mem::size_of::<A>() + 128);
        value.write_npy(&mut buf).map_err(MaterializeError::encode::<Self>)?;
        Ok(Encoded::new("npy", buf))
    }

    fn stream_hint(value: &Array<A, D>) -> Option<(&'static str, u64)> {
        Some(("npy", (value.len() * std::mem::size_of::<A>()) as u64))
    }

    fn save_to(value: &Array<A, D>, out: &mut dyn std::io::Write) -> Result<(), MaterializeError> {
        value.write_npy(out).map_err(MaterializeError::encode::<Self>)
    }

    fn load(encoded: Encoded) -> Result<Array<A, D>, MaterializeError> {
        Array::<A, D>::read_npy(&encoded.bytes[..]).map_err(|e| MaterializeError::decode::<Self>(&encoded.format, e))
    }

    fn metadata(value: &Array<A, D>, encoded: &Encoded) -> ArtifactMetadata {
        ArtifactMetadata {
            size: encoded.bytes.len() as u64,
            shape: Some(value.shape().to_vec()),
            dtype: Some(std::any::type_name::<A>().to_string()),
            ..Default::default()
        }
    }
}

impl<A, D> Materialize for Array<A, D>
where
    A: WritableElement + ReadableElement + Send + 'static,
    D: Dimension + 'static,
{
    type Materializer = NpyMaterializer<A, D>;
}

#[cfg(test)]
mod tests {
    use crate::materializer::{decode, encode};
    use ndarray::Array2;

    #[test]
    fn arrays_round_trip_as_npy() {
        let a = Array2::<f32>::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32);
        let e = encode(&a).unwrap();
        assert_eq!(&e.encoded.bytes[..6], b"\x93NUMPY");
        assert_eq!(e.metadata.shape, Some(vec![3, 4]));
        assert_eq!(decode::<Array2<f32>>(e.encoded).unwrap(), a);
    }
}
