//! Content hashes (blake3) of artifact bytes and cache keys.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The blake3 hash of an artifact's bytes: its identity in the artifact store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// Above this size, hashing uses every core (blake3's multi-threaded mode).
const PARALLEL_HASH_THRESHOLD: usize = 4 << 20;

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        if bytes.len() >= PARALLEL_HASH_THRESHOLD {
            let mut hasher = blake3::Hasher::new();
            hasher.update_rayon(bytes);
            return ContentHash(*hasher.finalize().as_bytes());
        }
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Wraps raw hash bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The 64-character lowercase hex form used in keys, records and messages.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses the hex form; the error says what was wrong with the input.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        blake3::Hash::from_hex(s)
            .map(|h| ContentHash(*h.as_bytes()))
            .map_err(|e| format!("`{s}` is not a content hash (64 hex characters): {e}"))
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(12);
        s
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.short())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ContentHash::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A sink that hashes and counts what is written to it: the content hash of
/// an encoding that is streamed rather than held in memory.
#[derive(Default)]
pub struct HashWriter {
    hasher: blake3::Hasher,
    len: u64,
}

impl HashWriter {
    /// The content hash and length of everything written.
    pub fn finish(&self) -> (ContentHash, u64) {
        (ContentHash(*self.hasher.finalize().as_bytes()), self.len)
    }
}

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() >= PARALLEL_HASH_THRESHOLD {
            self.hasher.update_rayon(buf);
        } else {
            self.hasher.update(buf);
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes through to another sink, hashing and counting what it accepted:
/// the content hash of bytes as they are stored.
pub struct HashingWriter<'a> {
    out: &'a mut dyn std::io::Write,
    hash: HashWriter,
}

impl<'a> HashingWriter<'a> {
    /// Writes through to `out`.
    pub fn new(out: &'a mut dyn std::io::Write) -> Self {
        HashingWriter { out, hash: HashWriter::default() }
    }

    /// The content hash and length of everything written through.
    pub fn finish(&self) -> (ContentHash, u64) {
        self.hash.finish()
    }
}

impl std::io::Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Incremental hashing of structured fields with unambiguous framing: every field
/// is length-prefixed, so `("ab", "c")` and `("a", "bc")` never collide.
#[derive(Default)]
pub struct FieldHasher {
    hasher: blake3::Hasher,
    /// Fields not yet fed to `hasher`: a cache key is ~30 small fields, and
    /// one `update` per field cost more than hashing them.
    pending: Vec<u8>,
}

impl FieldHasher {
    /// Bytes gathered before they are hashed.
    const BUFFER: usize = 4096;

    /// Starts a hash in the given domain (e.g. `"zenflow.cache.v1"`).
    pub fn new(domain: &str) -> Self {
        let mut h = FieldHasher { hasher: blake3::Hasher::new(), pending: Vec::with_capacity(512) };
        h.field(domain.as_bytes());
        h
    }

    /// Adds one field.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        if self.pending.len() + 8 + bytes.len() > Self::BUFFER {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
        self.pending.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        if bytes.len() > Self::BUFFER {
            self.hasher.update(&self.pending);
            self.pending.clear();
            self.hasher.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
        self
    }

    /// Adds one string field.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.field(s.as_bytes())
    }

    /// Finishes the hash.
    pub fn finish(&self) -> ContentHash {
        let mut hasher = self.hasher.clone();
        hasher.update(&self.pending);
        ContentHash(*hasher.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bad_input() {
        let h = ContentHash::of(b"hello");
        assert_eq!(ContentHash::from_hex(&h.to_hex()).unwrap(), h);
        let err = ContentHash::from_hex("xyz").unwrap_err();
        assert!(err.contains("not a content hash"), "{err}");
    }

    #[test]
    fn parallel_and_serial_hash_agree() {
        let big = vec![7u8; PARALLEL_HASH_THRESHOLD + 3];
        assert_eq!(ContentHash::of(&big).0, *blake3::hash(&big).as_bytes());
    }

    #[test]
    fn a_hash_writer_agrees_with_hashing_the_whole() {
        use std::io::Write;
        let big = vec![3u8; PARALLEL_HASH_THRESHOLD * 2 + 5];
        let mut w = HashWriter::default();
        w.write_all(&big[..10]).unwrap();
        w.write_all(&big[10..]).unwrap();
        assert_eq!(w.finish(), (ContentHash::of(&big), big.len() as u64));
    }

    #[test]
    fn framing_prevents_collisions() {
        let a = FieldHasher::new("d").str("ab").str("c").finish();
        let b = FieldHasher::new("d").str("a").str("bc").finish();
        assert_ne!(a, b);
    }

    /// The hash is that of the framed fields however they are buffered
    /// (a large field goes to the hasher directly).
    #[test]
    fn buffering_does_not_change_the_hash() {
        let big = vec![7u8; 3 * FieldHasher::BUFFER];
        let mut framed = Vec::new();
        for f in [&b"d"[..], b"small", &big, b"", &big[..FieldHasher::BUFFER - 3]] {
            framed.extend_from_slice(&(f.len() as u64).to_le_bytes());
            framed.extend_from_slice(f);
        }
        let buffered =
            FieldHasher::new("d").str("small").field(&big).field(b"").field(&big[..FieldHasher::BUFFER - 3]).finish();
        assert_eq!(buffered, ContentHash::of(&framed));
    }
}
