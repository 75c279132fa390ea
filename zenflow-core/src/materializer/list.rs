//! `Vec<T>` of any artifact type, and fan-in of many artifacts into one input.

use super::{ArtifactMetadata, Encoded, Materialize, MaterializeError, Materializer};
use bytes::{BufMut, Bytes, BytesMut};
use std::marker::PhantomData;

const MAGIC: &[u8; 8] = b"ZFLIST01";

/// Materializer for `Vec<T>` where `T` is an artifact type. Serde types are
/// written as one JSON or MessagePack array; other types frame each element's
/// own encoding one after another (magic, count, then `format length, format,
/// byte length, bytes` per element).
pub struct ListMaterializer<T>(PhantomData<fn() -> T>);

impl<T: Materialize> Materializer for ListMaterializer<T> {
    type Value = Vec<T>;
    const ID: &'static str = "zenflow.list";
    const VERSION: u32 = 1;

    fn save(value: &Vec<T>) -> Result<Encoded, MaterializeError> {
        T::encode_list(value)
    }

    fn load(encoded: Encoded) -> Result<Vec<T>, MaterializeError> {
        T::decode_list(encoded)
    }

    fn metadata(value: &Vec<T>, encoded: &Encoded) -> ArtifactMetadata {
        ArtifactMetadata { size: encoded.bytes.len() as u64, shape: Some(vec![value.len()]), ..Default::default() }
    }
}

/// The framed encoding of a list: each element with its own materializer.
pub(crate) fn frame<T: Materialize>(value: &[T]) -> Result<Encoded, MaterializeError> {
    {
        let parts = value.iter().map(T::Materializer::save).collect::<Result<Vec<_>, _>>()?;
        let len: usize = parts.iter().map(|p| 12 + p.format.len() + p.bytes.len()).sum();
        let mut buf = BytesMut::with_capacity(16 + len);
        buf.put_slice(MAGIC);
        buf.put_u64_le(parts.len() as u64);
        for p in &parts {
            buf.put_u32_le(p.format.len() as u32);
            buf.put_slice(p.format.as_bytes());
            buf.put_u64_le(p.bytes.len() as u64);
            buf.put_slice(&p.bytes);
        }
        Ok(Encoded::new("zflist", buf.freeze()))
    }
}

/// Reads the framed encoding of a list.
pub(crate) fn unframe<T: Materialize>(encoded: Encoded) -> Result<Vec<T>, MaterializeError> {
    if encoded.format != "zflist" {
        return Err(MaterializeError::decode::<ListMaterializer<T>>(
            &encoded.format,
            "expected a framed list (zflist)",
        ));
    }
    let parts =
        split(&encoded.bytes).map_err(|m| MaterializeError::decode::<ListMaterializer<T>>(&encoded.format, m))?;
    parts.into_iter().map(T::Materializer::load).collect()
}

/// The parts of a framed list, or what is wrong with it.
pub(super) fn split(bytes: &Bytes) -> Result<Vec<Encoded>, String> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<Bytes, String> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len()).ok_or("list is truncated")?;
        let out = bytes.slice(at..end);
        at = end;
        Ok(out)
    };
    if take(8)?.as_ref() != MAGIC {
        return Err("not a zenflow list (bad magic)".into());
    }
    let count = u64::from_le_bytes(take(8)?.as_ref().try_into().map_err(|_| "bad count")?);
    let mut parts = Vec::new();
    for _ in 0..count {
        let flen = u32::from_le_bytes(take(4)?.as_ref().try_into().map_err(|_| "bad length")?) as usize;
        let format = String::from_utf8(take(flen)?.to_vec()).map_err(|_| "format is not UTF-8")?;
        let blen = u64::from_le_bytes(take(8)?.as_ref().try_into().map_err(|_| "bad length")?);
        let blen = usize::try_from(blen).map_err(|_| "element too large")?;
        parts.push(Encoded { format, bytes: take(blen)? });
    }
    Ok(parts)
}

impl<T: Materialize> Materialize for Vec<T> {
    type Materializer = ListMaterializer<T>;

    fn from_parts(parts: Vec<Encoded>) -> Result<Self, MaterializeError> {
        parts.into_iter().map(T::Materializer::load).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::materializer::{decode, encode, Encoded};

    #[test]
    fn serde_lists_are_one_compact_array() {
        let v: Vec<f64> = (0..10_000).map(|i| i as f64 / 3.0).collect();
        let e = encode(&v).unwrap();
        assert_eq!(e.encoded.format, "msgpack");
        assert!(e.encoded.bytes.len() < 10_000 * 10, "about 9 bytes per f64: {}", e.encoded.bytes.len());
        assert_eq!(decode::<Vec<f64>>(e.encoded).unwrap(), v);
        let small = encode(&vec![1i64, 2]).unwrap();
        assert_eq!((small.encoded.format.as_str(), &small.encoded.bytes[..]), ("json", &b"[1,2]"[..]));
    }

    #[test]
    fn lists_round_trip() {
        let v = vec!["a".to_string(), String::new(), "ccc".into()];
        let e = encode(&v).unwrap();
        assert_eq!(e.encoded.format, "zflist");
        assert_eq!(decode::<Vec<String>>(e.encoded).unwrap(), v);
        let nested = vec![vec![1i64, 2], vec![]];
        assert_eq!(decode::<Vec<Vec<i64>>>(encode(&nested).unwrap().encoded).unwrap(), nested);
    }

    #[test]
    fn truncated_list_is_a_decode_error() {
        let e = encode(&vec![vec![1u8], vec![2, 3]]).unwrap().encoded;
        let cut = Encoded::new("zflist", e.bytes.slice(..e.bytes.len() - 1));
        let err = decode::<Vec<Vec<u8>>>(cut).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
