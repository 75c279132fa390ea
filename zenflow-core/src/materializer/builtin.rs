//! The built-in materializers for serde types, strings and bytes.

use super::{ArtifactMetadata, Encoded, Materialize, MaterializeError, Materializer};
use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;

/// Encodings up to this size are written as JSON (readable in any tool); larger
/// ones as MessagePack (compact, fast, and still portable).
const JSON_LIMIT: usize = 16 * 1024;
const SUMMARY_CHARS: usize = 200;

/// Materializer for serde types: JSON for small values, MessagePack for large ones.
pub struct SerdeMaterializer<T>(PhantomData<fn() -> T>);

impl<T: Serialize + DeserializeOwned + Send + 'static> Materializer for SerdeMaterializer<T> {
    type Value = T;
    const ID: &'static str = "zenflow.serde";
    const VERSION: u32 = 1;

    fn save(value: &T) -> Result<Encoded, MaterializeError> {
        save_serde::<Self, T, T>(value)
    }

    fn load(encoded: Encoded) -> Result<T, MaterializeError> {
        match encoded.format.as_str() {
            "json" => {
                serde_json::from_slice(&encoded.bytes).map_err(|e| MaterializeError::decode::<Self>(&encoded.format, e))
            }
            "msgpack" => {
                rmp_serde::from_slice(&encoded.bytes).map_err(|e| MaterializeError::decode::<Self>(&encoded.format, e))
            }
            other => Err(MaterializeError::decode::<Self>(other, "unknown format; expected json or msgpack")),
        }
    }

    fn metadata(_value: &T, encoded: &Encoded) -> ArtifactMetadata {
        serde_metadata(encoded)
    }
}

fn serde_metadata(encoded: &Encoded) -> ArtifactMetadata {
    let summary = (encoded.format == "json").then(|| preview(&String::from_utf8_lossy(&encoded.bytes)));
    ArtifactMetadata { size: encoded.bytes.len() as u64, summary, ..Default::default() }
}

/// JSON when small and exact, MessagePack otherwise. `O` is the owned type
/// the bytes load as.
fn save_serde<M: Materializer, T: Serialize + ?Sized, O: Serialize + DeserializeOwned>(
    value: &T,
) -> Result<Encoded, MaterializeError> {
    let packed = rmp_serde::to_vec_named(value).map_err(MaterializeError::encode::<M>)?;
    if packed.len() <= JSON_LIMIT {
        let json = serde_json::to_vec(value).map_err(MaterializeError::encode::<M>)?;
        // JSON cannot carry everything MessagePack can (NaN becomes null,
        // silently, inside an Option): keep JSON only when it reads back
        // as the same value.
        let same = serde_json::from_slice::<O>(&json)
            .ok()
            .and_then(|back| rmp_serde::to_vec_named(&back).ok())
            .is_some_and(|again| again == packed);
        if same {
            return Ok(Encoded::new("json", json));
        }
    }
    Ok(Encoded::new("msgpack", packed))
}

fn preview(s: &str) -> String {
    if s.chars().count() <= SUMMARY_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SUMMARY_CHARS).collect();
    out.push('…');
    out
}

/// Materializer for `String`: the UTF-8 bytes as they are.
pub struct Utf8Materializer;

impl Materializer for Utf8Materializer {
    type Value = String;
    const ID: &'static str = "zenflow.utf8";
    const VERSION: u32 = 1;
    const EXACT: bool = true;

    fn save(value: &String) -> Result<Encoded, MaterializeError> {
        Ok(Encoded::new("utf8", Bytes::copy_from_slice(value.as_bytes())))
    }

    fn load(encoded: Encoded) -> Result<String, MaterializeError> {
        String::from_utf8(encoded.bytes.to_vec()).map_err(|e| MaterializeError::decode::<Self>(&encoded.format, e))
    }

    fn metadata(value: &String, encoded: &Encoded) -> ArtifactMetadata {
        ArtifactMetadata { size: encoded.bytes.len() as u64, summary: Some(preview(value)), ..Default::default() }
    }
}

/// Materializer for raw bytes (`Vec<u8>`, `bytes::Bytes`): stored as they are.
pub struct BytesMaterializer<T>(PhantomData<fn() -> T>);

impl Materializer for BytesMaterializer<Vec<u8>> {
    type Value = Vec<u8>;
    const ID: &'static str = "zenflow.bytes";
    const VERSION: u32 = 1;
    const EXACT: bool = true;

    fn save(value: &Vec<u8>) -> Result<Encoded, MaterializeError> {
        Ok(Encoded::new("raw", Bytes::copy_from_slice(value)))
    }

    fn load(encoded: Encoded) -> Result<Vec<u8>, MaterializeError> {
        Ok(encoded.bytes.to_vec())
    }
}

impl Materializer for BytesMaterializer<Bytes> {
    type Value = Bytes;
    const ID: &'static str = "zenflow.bytes";
    const VERSION: u32 = 1;
    const EXACT: bool = true;

    fn save(value: &Bytes) -> Result<Encoded, MaterializeError> {
        Ok(Encoded::new("raw", value.clone()))
    }

    fn load(encoded: Encoded) -> Result<Bytes, MaterializeError> {
        Ok(encoded.bytes)
    }
}

impl Materialize for String {
    type Materializer = Utf8Materializer;
}

impl Materialize for Vec<u8> {
    type Materializer = BytesMaterializer<Vec<u8>>;
}

impl Materialize for Bytes {
    type Materializer = BytesMaterializer<Bytes>;
}

/// `encode_list` for serde types: one JSON (small) or MessagePack array.
pub fn serde_list_encode<T: Materialize + Serialize + DeserializeOwned>(
    items: &[T],
) -> Result<Encoded, MaterializeError> {
    save_serde::<super::ListMaterializer<T>, [T], Vec<T>>(items)
}

/// `decode_list` for serde types; also reads framed lists.
pub fn serde_list_decode<T: Materialize + DeserializeOwned>(encoded: Encoded) -> Result<Vec<T>, MaterializeError> {
    match encoded.format.as_str() {
        "json" => serde_json::from_slice(&encoded.bytes)
            .map_err(|e| MaterializeError::decode::<super::ListMaterializer<T>>(&encoded.format, e)),
        "msgpack" => rmp_serde::from_slice(&encoded.bytes)
            .map_err(|e| MaterializeError::decode::<super::ListMaterializer<T>>(&encoded.format, e)),
        _ => super::list::unframe(encoded),
    }
}

/// Implements `Materialize` for serde types, with compact lists.
#[macro_export]
#[doc(hidden)]
macro_rules! __serde_materialize_body {
    () => {
        fn encode_list(
            items: &[Self],
        ) -> Result<$crate::materializer::Encoded, $crate::materializer::MaterializeError> {
            $crate::materializer::serde_list_encode(items)
        }

        fn decode_list(
            encoded: $crate::materializer::Encoded,
        ) -> Result<Vec<Self>, $crate::materializer::MaterializeError> {
            $crate::materializer::serde_list_decode(encoded)
        }
    };
}

macro_rules! serde_artifacts {
    ($($t:ty),* $(,)?) => {
        $(impl Materialize for $t {
            type Materializer = SerdeMaterializer<$t>;
            crate::__serde_materialize_body!();
        })*
    };
}

serde_artifacts!(bool, char, i8, i16, i32, i64, i128, isize, u16, u32, u64, u128, usize, f32, f64, ());

impl<V> Materialize for BTreeMap<String, V>
where
    V: Serialize + DeserializeOwned + Send + 'static,
{
    type Materializer = SerdeMaterializer<Self>;
    crate::__serde_materialize_body!();
}

impl<V> Materialize for HashMap<String, V>
where
    V: Serialize + DeserializeOwned + Send + 'static,
{
    type Materializer = SortedMapMaterializer<V>;
}

/// Materializer for `HashMap<String, V>`: written in key order, so equal maps
/// give equal bytes (and equal content hashes) in every process.
pub struct SortedMapMaterializer<V>(PhantomData<fn() -> V>);

impl<V: Serialize + DeserializeOwned + Send + 'static> Materializer for SortedMapMaterializer<V> {
    type Value = HashMap<String, V>;
    const ID: &'static str = SerdeMaterializer::<()>::ID;
    const VERSION: u32 = SerdeMaterializer::<()>::VERSION;

    fn save(value: &HashMap<String, V>) -> Result<Encoded, MaterializeError> {
        let sorted: BTreeMap<&String, &V> = value.iter().collect();
        save_serde::<Self, _, BTreeMap<String, V>>(&sorted)
    }

    fn load(encoded: Encoded) -> Result<HashMap<String, V>, MaterializeError> {
        SerdeMaterializer::<BTreeMap<String, V>>::load(encoded).map(|m| m.into_iter().collect()).map_err(retag::<Self>)
    }

    fn metadata(_value: &HashMap<String, V>, encoded: &Encoded) -> ArtifactMetadata {
        serde_metadata(encoded)
    }
}

fn retag<M: Materializer>(e: MaterializeError) -> MaterializeError {
    match e {
        MaterializeError::Decode { format, message, .. } => MaterializeError::decode::<M>(&format, message),
        MaterializeError::Encode { message, .. } => MaterializeError::encode::<M>(message),
    }
}

impl<T> Materialize for Option<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Materializer = SerdeMaterializer<Self>;
    crate::__serde_materialize_body!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::materializer::{decode, encode};

    #[test]
    fn small_values_are_json_large_ones_msgpack() {
        let small = encode(&42i64).unwrap();
        assert_eq!(small.encoded.format, "json");
        assert_eq!(&small.encoded.bytes[..], b"42");
        let big: BTreeMap<String, f64> = (0..5000).map(|i| (format!("k{i}"), i as f64)).collect();
        let e = encode(&big).unwrap();
        assert_eq!(e.encoded.format, "msgpack");
        assert_eq!(decode::<BTreeMap<String, f64>>(e.encoded).unwrap(), big);
    }

    #[test]
    fn nan_survives_by_falling_back_to_msgpack() {
        let e = encode(&f64::NAN).unwrap();
        assert_eq!(e.encoded.format, "msgpack");
        assert!(decode::<f64>(e.encoded).unwrap().is_nan());
        // Inside an Option, JSON would read null back as None without an error.
        let e = encode(&Some(f64::INFINITY)).unwrap();
        assert_eq!(e.encoded.format, "msgpack");
        assert_eq!(decode::<Option<f64>>(e.encoded).unwrap(), Some(f64::INFINITY));
    }

    #[test]
    fn hash_maps_encode_deterministically() {
        let a: HashMap<String, i64> = (0..50).map(|i| (format!("k{i}"), i)).collect();
        let b: HashMap<String, i64> = (0..50).rev().map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(encode(&a).unwrap().hash, encode(&b).unwrap().hash);
        assert_eq!(decode::<HashMap<String, i64>>(encode(&a).unwrap().encoded).unwrap(), a);
    }

    #[test]
    fn wrong_bytes_give_a_decode_error_naming_the_type() {
        let err = decode::<i64>(Encoded::new("json", &b"\"nope\""[..])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("i64") && msg.contains("zenflow.serde"), "{msg}");
        let err = decode::<String>(Encoded::new("utf8", &[0xff, 0xfe][..])).unwrap_err();
        assert!(err.to_string().contains("String"), "{err}");
    }
}
