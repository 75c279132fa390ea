//! Digesting token streams: what a piece of code hashes to, and which names
//! it mentions.
//!
//! Hashing tokens rather than text makes comments and formatting free: a
//! reflowed line or a new `//` comment changes nothing. Doc comments are
//! tokens (`#[doc = "..."]`) and are skipped too. The walk is the same for the
//! compiler's tokens and proc-macro2's own, so a step's tokens (given by the
//! compiler) and its helpers' (lexed from files) hash alike.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use std::collections::BTreeSet;

/// What a piece of code hashes to and the names it mentions.
#[derive(Debug, Default)]
pub(crate) struct Digest {
    /// blake3 of the tokens.
    pub hash: [u8; 32],
    /// Every identifier in the code, and every `{name}` captured by a format
    /// string (`format!("{THRESHOLD}")` names a `const`).
    pub names: BTreeSet<String>,
}

/// Digests `tokens`.
pub(crate) fn digest(tokens: TokenStream) -> Digest {
    let mut hasher = blake3::Hasher::new();
    let mut names = BTreeSet::new();
    walk(tokens, &mut hasher, &mut names);
    Digest { hash: *hasher.finalize().as_bytes(), names }
}

fn walk(tokens: TokenStream, h: &mut blake3::Hasher, names: &mut BTreeSet<String>) {
    let trees: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < trees.len() {
        if let Some(skip) = doc_attribute(&trees[i..]) {
            i += skip;
            continue;
        }
        match &trees[i] {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Brace => ("{", "}"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::None => ("\u{2}", "\u{3}"),
                };
                h.update(open.as_bytes());
                walk(g.stream(), h, names);
                h.update(close.as_bytes());
            }
            TokenTree::Ident(ident) => {
                let name = ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
                h.update(b" ");
                h.update(name.as_bytes());
                h.update(b" ");
                names.insert(name);
            }
            TokenTree::Punct(p) => {
                let mut buf = [0u8; 4];
                h.update(p.as_char().encode_utf8(&mut buf).as_bytes());
                if p.spacing() == Spacing::Alone {
                    h.update(b" ");
                }
            }
            TokenTree::Literal(lit) => {
                let text = lit.to_string();
                h.update(b" ");
                h.update(text.as_bytes());
                h.update(b" ");
                if text.contains('"') {
                    captured_names(&text, names);
                }
            }
        }
        i += 1;
    }
}

/// How many trees a `#[doc ...]` or `#![doc ...]` attribute at the start of
/// `trees` spans, if one is there.
fn doc_attribute(trees: &[TokenTree]) -> Option<usize> {
    let TokenTree::Punct(hash) = trees.first()? else { return None };
    if hash.as_char() != '#' {
        return None;
    }
    let bang = matches!(trees.get(1), Some(TokenTree::Punct(p)) if p.as_char() == '!');
    let at = if bang { 2 } else { 1 };
    let TokenTree::Group(g) = trees.get(at)? else { return None };
    if g.delimiter() != Delimiter::Bracket {
        return None;
    }
    match g.stream().into_iter().next() {
        Some(TokenTree::Ident(i)) if i == "doc" => Some(at + 1),
        _ => None,
    }
}

/// The names a format string captures: `{name}`, `{name:?}`, `{name:>8}`.
fn captured_names(literal: &str, names: &mut BTreeSet<String>) {
    let mut rest = literal;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            continue;
        }
        let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.starts_with(|c: char| c.is_alphabetic() || c == '_') {
            names.insert(name.to_string());
        }
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(code: &str) -> Digest {
        digest(TokenStream::from_str(code).expect("test code lexes"))
    }

    #[test]
    fn comments_docs_and_layout_do_not_count() {
        let a = d("fn f(x: u32) -> u32 { x + 1 }");
        let b = d("/// Adds one.\nfn f(\n    x: u32 // the input\n) -> u32 {\n    x  +  1\n}");
        assert_eq!(a.hash, b.hash);
        let c = d("#![doc = \"crate\"] #[doc = \"x\"] fn f(x: u32) -> u32 { x + 1 }");
        assert_eq!(a.hash, c.hash);
    }

    #[test]
    fn every_token_counts() {
        let a = d("fn f(x: u32) -> u32 { x + 1 }");
        for other in [
            "fn f(x: u32) -> u32 { x + 2 }",
            "fn f(x: u32) -> u32 { x - 1 }",
            "fn f(y: u32) -> u32 { y + 1 }",
            "fn f(x: u32) -> u32 { (x + 1) }",
            "#[inline] fn f(x: u32) -> u32 { x + 1 }",
            "fn f(x: u32) -> u32 { x += 1 }",
        ] {
            assert_ne!(a.hash, d(other).hash, "{other}");
        }
        // `x + = 1` and `x += 1` are different programs.
        assert_ne!(d("a += 1").hash, d("a + = 1").hash);
    }

    #[test]
    fn names_include_format_captures() {
        let names = d(r#"fn f() { println!("{LIMIT} {x:?} {{escaped}} {0}", helper(r#try)); }"#).names;
        for n in ["f", "println", "LIMIT", "x", "helper", "try"] {
            assert!(names.contains(n), "{n} in {names:?}");
        }
        assert!(!names.contains("escaped"), "{names:?}");
    }
}
