//! Materializers turn step values into bytes and back.
//!
//! A type becomes an artifact by implementing [`Materialize`], which names its
//! [`Materializer`]. Built in:
//!
//! | type | materializer | format |
//! |---|---|---|
//! | numbers, `bool`, `char`, maps of serde values, and any `#[derive(Artifact)]` type | [`SerdeMaterializer`] | JSON when small, MessagePack when large |
//! | `String` | [`Utf8Materializer`] | UTF-8 text |
//! | `Vec<u8>`, `bytes::Bytes` | [`BytesMaterializer`] | raw bytes |
//! | `Vec<T>` for any artifact type `T` | [`ListMaterializer`] | a framed list of `T`'s encodings |
//! | `ndarray::Array<A, D>` (feature `ndarray`) | `NpyMaterializer` | `.npy`, readable by numpy |
//! | `arrow_array::RecordBatch` (feature `arrow`) | `ParquetMaterializer` | Parquet (zstd), with its schema and column statistics in the record |
//!
//! The materializer id and version go into every cache key, so changing an
//! encoding (bumping `VERSION`) invalidates the cache for the values it wrote.
//!
//! Two optional promises make large data cheap: [`Materializer::EXACT`]
//! (decoding gives back the very value, so a step in the same process
//! receives the value itself), and [`Materializer::stream_hint`] with
//! [`Materializer::save_to`] (a large value is written to the store straight
//! from memory, never encoded into a buffer). `ndarray` arrays make both.

mod builtin;
pub mod columns;
mod list;
#[cfg(feature = "ndarray")]
mod npy;
#[cfg(feature = "arrow")]
mod parquet;
pub mod render;
pub mod table;

pub use builtin::{
    serde_list_decode, serde_list_encode, BytesMaterializer, SerdeMaterializer, SortedMapMaterializer, Utf8Materializer,
};
pub use list::ListMaterializer;
#[cfg(feature = "ndarray")]
pub use npy::NpyMaterializer;
#[cfg(feature = "arrow")]
pub use parquet::ParquetMaterializer;

use crate::hash::ContentHash;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Bytes produced by a materializer, with the name of their format
/// (`"json"`, `"msgpack"`, `"utf8"`, `"raw"`, `"npy"`, `"zflist"`).
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// The format of `bytes`, recorded with the artifact and given back to `load`.
    pub format: String,
    /// The encoded value.
    pub bytes: Bytes,
}

impl Encoded {
    /// Builds an encoding.
    pub fn new(format: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        Encoded { format: format.into(), bytes: bytes.into() }
    }
}

/// What is known about an artifact besides its bytes; stored in the metadata store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMetadata {
    /// Size of the encoded bytes.
    pub size: u64,
    /// Shape, for arrays and tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    /// Element type, for arrays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// A short human-readable summary (a preview of small values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Anything else a materializer wants to record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Why a value could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum MaterializeError {
    /// The value could not be encoded.
    #[error("could not encode a `{type_name}` with {materializer}: {message}")]
    Encode {
        /// The Rust type.
        type_name: &'static str,
        /// The materializer id.
        materializer: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The bytes could not be decoded.
    #[error(
        "could not decode a `{type_name}` from `{format}` bytes with {materializer}: {message}; \
             if the type changed since the artifact was written, bump the step's `version` to re-run it"
    )]
    Decode {
        /// The Rust type.
        type_name: &'static str,
        /// The materializer id.
        materializer: &'static str,
        /// The format recorded with the artifact.
        format: String,
        /// What went wrong.
        message: String,
    },
}

impl MaterializeError {
    /// An encode error for `T` from materializer `M`.
    pub fn encode<M: Materializer>(message: impl ToString) -> Self {
        MaterializeError::Encode {
            type_name: std::any::type_name::<M::Value>(),
            materializer: M::ID,
            message: message.to_string(),
        }
    }

    /// A decode error for `T` from materializer `M`.
    pub fn decode<M: Materializer>(format: &str, message: impl ToString) -> Self {
        MaterializeError::Decode {
            type_name: std::any::type_name::<M::Value>(),
            materializer: M::ID,
            format: format.to_string(),
            message: message.to_string(),
        }
    }
}

/// Turns values of one type into bytes and back.
///
/// Materializers are stateless: every function is associated, so a type's
/// materializer can be named in a `const` context and recorded in the plan.
pub trait Materializer: Send + Sync + 'static {
    /// The type this materializer handles.
    type Value: Send + 'static;
    /// Stable identifier, recorded with every artifact and part of the cache key.
    const ID: &'static str;
    /// Version of the encoding; bump it when the bytes for the same value change.
    const VERSION: u32;
    /// Whether `load(save(v))` always equals `v`. When it does, a step in
    /// the same process as the producer receives the produced value itself
    /// instead of decoding its bytes (saving a decode and a copy of the
    /// data). Leave it `false` unless the encoding keeps everything: a
    /// lossy encoding would then hand a fresh run other values than a cached
    /// one.
    const EXACT: bool = false;

    /// Encodes a value.
    fn save(value: &Self::Value) -> Result<Encoded, MaterializeError>;

    /// For a materializer whose [`Materializer::save_to`] writes as it
    /// encodes: the format and about how many bytes the encoding of `value`
    /// takes, when that is cheap to tell without encoding (an array: its
    /// element count times the element size). A value whose encoding is at
    /// least [`STREAM_THRESHOLD`] bytes is then written to the store straight
    /// from the value, hashed as it is written: no encoded copy of a large
    /// array in memory. The default, `None`, never streams.
    fn stream_hint(_value: &Self::Value) -> Option<(&'static str, u64)> {
        None
    }

    /// Writes exactly the bytes [`Materializer::save`] returns into `out`.
    /// The default encodes with `save` and writes the buffer; a materializer
    /// that gives a [`Materializer::stream_hint`] writes as it encodes. (For
    /// a streamed value, [`Materializer::metadata`] is given an [`Encoded`]
    /// without bytes; zenflow records the size.)
    fn save_to(value: &Self::Value, out: &mut dyn std::io::Write) -> Result<(), MaterializeError>
    where
        Self: Sized,
    {
        let encoded = Self::save(value)?;
        out.write_all(&encoded.bytes).map_err(MaterializeError::encode::<Self>)
    }

    /// Decodes a value from bytes previously produced by [`Materializer::save`].
    fn load(encoded: Encoded) -> Result<Self::Value, MaterializeError>;

    /// Metadata recorded with the artifact. The default records the size.
    fn metadata(_value: &Self::Value, encoded: &Encoded) -> ArtifactMetadata {
        ArtifactMetadata { size: encoded.bytes.len() as u64, ..Default::default() }
    }
}

/// A type that can be stored as an artifact: it names its [`Materializer`].
///
/// Implement it with `#[derive(zenflow::Artifact)]` for serde types, or by hand
/// to use a materializer of your own.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored as an artifact: it has no materializer",
    label = "this type is not an artifact type",
    note = "derive it for a serde type: `#[derive(Serialize, Deserialize, zenflow::Artifact)]`",
    note = "or implement `zenflow::Materialize` for it with a `Materializer` of your own",
    note = "a step that returns a tuple needs `#[step(outputs(a, b, ...))]` to store each element as its own artifact"
)]
pub trait Materialize: Sized + Send + 'static {
    /// The materializer that saves and loads this type.
    type Materializer: Materializer<Value = Self>;

    /// Encodes a `Vec<Self>` artifact. The default frames each element's own
    /// encoding; serde types override it with one compact encoding of the
    /// whole vector.
    #[doc(hidden)]
    fn encode_list(items: &[Self]) -> Result<Encoded, MaterializeError> {
        list::frame(items)
    }

    /// Decodes what [`Materialize::encode_list`] wrote.
    #[doc(hidden)]
    fn decode_list(encoded: Encoded) -> Result<Vec<Self>, MaterializeError> {
        list::unframe(encoded)
    }

    /// Builds the value from the artifacts of a fan-in (`Vec<Handle<T>>` wired
    /// into a `Vec<T>` input). Only `Vec<T>` supports it.
    #[doc(hidden)]
    fn from_parts(parts: Vec<Encoded>) -> Result<Self, MaterializeError> {
        let _ = parts;
        Err(MaterializeError::Decode {
            type_name: std::any::type_name::<Self>(),
            materializer: Self::Materializer::ID,
            format: "list".into(),
            message: "a list of artifacts can only be read into a `Vec<T>` input".into(),
        })
    }
}

/// A value on its way from the step that produced it to a step in the same
/// process that consumes it: the first consumer that asks for its exact type
/// takes it. Clones share the value.
#[derive(Clone)]
pub struct Handoff(std::sync::Arc<std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>>);

impl Handoff {
    /// Holds `value` for a consumer.
    pub fn new<T: Send + 'static>(value: T) -> Self {
        Handoff(std::sync::Arc::new(std::sync::Mutex::new(Some(Box::new(value)))))
    }

    /// The value, if it is still here and is a `T`.
    pub fn take<T: 'static>(&self) -> Option<T> {
        let value = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()?;
        value.downcast::<T>().ok().map(|b| *b)
    }

    /// Calls `f` with the value, if it is still here and is a `T`.
    pub fn with_ref<T: 'static, R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let guard = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref()?.downcast_ref::<T>().map(f)
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handoff(..)")
    }
}

/// Encodings at least this large are streamed when their materializer gives
/// a [`Materializer::stream_hint`].
pub const STREAM_THRESHOLD: u64 = 8 << 20;

/// Writes a streamed encoding into the sink it is given; callable more than
/// once (a store that needs the hash before it writes calls it twice).
pub type StreamFn = std::sync::Arc<dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Send + Sync>;

/// An encoding that is not held in memory: it is written from the value when
/// it is stored, and hashed as it is written.
#[derive(Clone)]
pub struct Streamed {
    /// Writes the encoding (the materializer's `save_to` on the value).
    pub write: StreamFn,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").finish_non_exhaustive()
    }
}

/// An encoded value plus everything recorded about it.
#[derive(Clone, Debug)]
pub struct EncodedValue {
    /// The bytes and their format.
    pub encoded: Encoded,
    /// Content hash of the bytes; `None` for a streamed encoding, which the
    /// store hashes as it writes it.
    pub hash: Option<ContentHash>,
    /// Metadata for the record.
    pub metadata: ArtifactMetadata,
    /// The Rust type name.
    pub type_name: &'static str,
    /// The materializer id.
    pub materializer: &'static str,
    /// The materializer version.
    pub materializer_version: u32,
    /// The value itself, for consumers in this process, when its
    /// materializer is [`Materializer::EXACT`].
    pub handoff: Option<Handoff>,
    /// Set when the encoding is streamed: `encoded.bytes` is then empty.
    pub streamed: Option<Streamed>,
}

/// Encodes `value` with its type's materializer.
pub fn encode<T: Materialize>(value: &T) -> Result<EncodedValue, MaterializeError> {
    let encoded = T::Materializer::save(value)?;
    let metadata = T::Materializer::metadata(value, &encoded);
    Ok(EncodedValue {
        // The store addresses and verifies objects by the hash of their bytes.
        hash: Some(ContentHash::of(&encoded.bytes)),
        encoded,
        metadata,
        type_name: std::any::type_name::<T>(),
        materializer: T::Materializer::ID,
        materializer_version: T::Materializer::VERSION,
        handoff: None,
        streamed: None,
    })
}

/// [`encode`] for a value a step returned: keeps the value for consumers in
/// this process when its materializer is [`Materializer::EXACT`], and leaves
/// the encoding of a large value (see [`Materializer::stream_hint`]) to be
/// streamed by the store rather than built here.
pub fn encode_owned<T: Materialize>(value: T) -> Result<EncodedValue, MaterializeError> {
    if let Some((format, _)) = T::Materializer::stream_hint(&value).filter(|(_, n)| *n >= STREAM_THRESHOLD) {
        // Written, and hashed, only when stored.
        let metadata = T::Materializer::metadata(&value, &Encoded::new(format, Bytes::new()));
        let held = Handoff::new(value);
        let source = held.clone();
        let write: StreamFn = std::sync::Arc::new(move |out: &mut dyn std::io::Write| {
            source
                .with_ref(|v: &T| T::Materializer::save_to(v, out).map_err(std::io::Error::other))
                .unwrap_or_else(|| Err(std::io::Error::other("the value was handed over before it was stored")))
        });
        return Ok(EncodedValue {
            encoded: Encoded::new(format, Bytes::new()),
            hash: None,
            metadata,
            type_name: std::any::type_name::<T>(),
            materializer: T::Materializer::ID,
            materializer_version: T::Materializer::VERSION,
            handoff: T::Materializer::EXACT.then_some(held),
            streamed: Some(Streamed { write }),
        });
    }
    let mut encoded = encode(&value)?;
    if T::Materializer::EXACT {
        encoded.handoff = Some(Handoff::new(value));
    }
    Ok(encoded)
}

/// Decodes a value of type `T`.
pub fn decode<T: Materialize>(encoded: Encoded) -> Result<T, MaterializeError> {
    T::Materializer::load(encoded)
}
