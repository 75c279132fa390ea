//! A stored value in a human form, read without its Rust type: what
//! `artifacts cat` prints. Every built-in format has one; a format it does
//! not know is described by its size.

use super::Encoded;

/// How many elements of an array, or parts of a list, are shown.
const SHOWN: usize = 10;

/// `encoded` as text for a person: JSON and MessagePack as indented JSON,
/// UTF-8 as it is, a `.npy` array as its element type, shape and first
/// values, a framed list part by part, anything else as its size and first
/// bytes.
pub fn text(encoded: &Encoded) -> String {
    let bytes = &encoded.bytes[..];
    match encoded.format.as_str() {
        "json" => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => pretty(&v),
            Err(e) => format!("(not valid JSON: {e})\n{}", String::from_utf8_lossy(bytes)),
        },
        "msgpack" => match rmp_serde::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => pretty(&v),
            Err(e) => format!("(MessagePack that is not plain data: {e}) {}", raw(bytes)),
        },
        "utf8" => String::from_utf8_lossy(bytes).into_owned(),
        "npy" => npy(bytes).unwrap_or_else(|e| format!("(not a .npy array: {e}) {}", raw(bytes))),
        "zflist" => list(bytes),
        "parquet" => match head(encoded, SHOWN) {
            Ok(shown) => shown,
            Err(e) => format!("({e}) {}", raw(bytes)),
        },
        other => format!("{} of `{other}`", raw(bytes)),
    }
}

/// The first `n` rows of a table (a `parquet` encoding); an error for
/// another encoding, or in a binary built without the `arrow` feature.
pub fn table_head(encoded: &Encoded, n: usize) -> Result<super::table::Head, String> {
    if encoded.format != "parquet" {
        return Err(format!("`{}` is not a table", encoded.format));
    }
    #[cfg(feature = "arrow")]
    return super::table::head(encoded.bytes.clone(), n).map_err(|e| format!("could not read the table: {e}"));
    #[cfg(not(feature = "arrow"))]
    {
        let _ = n;
        Err("a Parquet table: this binary was built without zenflow's `arrow` feature, which reads it".into())
    }
}

/// [`table_head`] as aligned text under the table's size.
pub fn head(encoded: &Encoded, n: usize) -> Result<String, String> {
    let head = table_head(encoded, n)?;
    Ok(format!("a table of {} rows × {} columns\n{}", head.total, head.columns.len(), head.to_text()))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// The size and the first bytes in hex.
fn raw(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 32 { " ..." } else { "" };
    format!("{} bytes: {}{more}", bytes.len(), head.join(" "))
}

/// A framed list (`zflist`): each part in its own form.
fn list(bytes: &[u8]) -> String {
    let parts = match super::list::split(&bytes::Bytes::copy_from_slice(bytes)) {
        Ok(parts) => parts,
        Err(e) => return format!("(not a framed list: {e}) {}", raw(bytes)),
    };
    let mut out = format!("a list of {} parts", parts.len());
    for (i, part) in parts.iter().take(SHOWN).enumerate() {
        out.push_str(&format!("\n[{i}] ({}) {}", part.format, text(part).replace('\n', "\n    ")));
    }
    if parts.len() > SHOWN {
        out.push_str(&format!("\n... and {} more", parts.len() - SHOWN));
    }
    out
}

/// A `.npy` array: `dtype <f8, shape (150, 4)` and its first values.
fn npy(bytes: &[u8]) -> Result<String, String> {
    let (header, data) = npy_header(bytes)?;
    let field = |name: &str| -> Option<String> {
        let at = header.find(&format!("'{name}'"))? + name.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
        Some(rest[..end].trim().trim_matches('\'').to_string())
    };
    let descr = field("descr").ok_or("no descr in the header")?;
    let shape = field("shape").ok_or("no shape in the header")?;
    let fortran = field("fortran_order").is_some_and(|f| f == "True");
    let values = npy_values(&descr, data);
    let order = if fortran { ", Fortran order" } else { "" };
    Ok(match values {
        Some((shown, total)) => {
            let more = if total > shown.len() { ", ..." } else { "" };
            format!("array of {descr}, shape {shape}{order}: {total} values\n[{}{more}]", shown.join(", "))
        }
        None => format!("array of {descr}, shape {shape}{order}: {} bytes of data", data.len()),
    })
}

/// The header text and the data of a `.npy` file (versions 1 to 3).
fn npy_header(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    if bytes.get(..6) != Some(&b"\x93NUMPY"[..]) {
        return Err("no .npy magic".into());
    }
    let major = *bytes.get(6).ok_or("truncated")?;
    let (len, start) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or("truncated")?;
            (u16::from_le_bytes([b[0], b[1]]) as usize, 10)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unknown .npy version {v}")),
    };
    let header = bytes.get(start..start + len).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    Ok((header, &bytes[start + len..]))
}

/// The first values of little-endian (or byte-sized) data of type `descr`,
/// and how many there are; `None` for a type not shown.
fn npy_values(descr: &str, data: &[u8]) -> Option<(Vec<String>, usize)> {
    fn take<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> String) -> (Vec<String>, usize) {
        let shown = data.chunks_exact(N).take(SHOWN).map(|c| f(c.try_into().unwrap_or([0; N]))).collect();
        (shown, data.len() / N)
    }
    Some(match descr {
        "<f8" => take(data, |b| f64::from_le_bytes(b).to_string()),
        "<f4" => take(data, |b| f32::from_le_bytes(b).to_string()),
        "<i8" => take(data, |b| i64::from_le_bytes(b).to_string()),
        "<i4" => take(data, |b| i32::from_le_bytes(b).to_string()),
        "<u8" => take(data, |b| u64::from_le_bytes(b).to_string()),
        "<u4" => take(data, |b| u32::from_le_bytes(b).to_string()),
        "|u1" => take(data, |b: [u8; 1]| b[0].to_string()),
        "|i1" => take(data, |b: [u8; 1]| (b[0] as i8).to_string()),
        "|b1" => take(data, |b: [u8; 1]| (b[0] != 0).to_string()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_format_reads_as_text() {
        let json = Encoded::new("json", &br#"{"a":[1,2],"b":"x"}"#[..]);
        assert_eq!(text(&json), "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"x\"\n}");
        let packed = rmp_serde::to_vec_named(&serde_json::json!({"w": [0.5, 1.5]})).unwrap();
        assert_eq!(text(&Encoded::new("msgpack", packed)), "{\n  \"w\": [\n    0.5,\n    1.5\n  ]\n}");
        assert_eq!(text(&Encoded::new("utf8", &b"hello"[..])), "hello");
        assert_eq!(text(&Encoded::new("raw", &[0u8, 255][..])), "2 bytes: 00 ff of `raw`");
        assert_eq!(
            text(&Encoded::new("json", &b"{nope"[..])).lines().next().unwrap_or_default().get(..17),
            Some("(not valid JSON: ")
        );
    }

    #[test]
    fn an_npy_array_shows_its_type_shape_and_first_values() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        for v in [1.0f64, 2.5, 3.0, 4.0, 5.0, 6.0] {
            npy.extend_from_slice(&v.to_le_bytes());
        }
        let shown = text(&Encoded::new("npy", npy.clone()));
        assert_eq!(shown, "array of <f8, shape (2, 3): 6 values\n[1, 2.5, 3, 4, 5, 6]");
        npy[0] = b'x';
        assert!(text(&Encoded::new("npy", npy)).starts_with("(not a .npy array: no .npy magic)"));
    }
}
