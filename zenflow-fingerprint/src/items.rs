//! The items of a set of source files, and which of them a piece of code can
//! reach.
//!
//! Reaching is by name, not by resolved path: code that mentions `fit`
//! reaches every function, method, type or `const` called `fit` in the
//! indexed files, whichever module or crate it is in, and everything those
//! mention in turn. That over-approximates (a namesake in another module is
//! taken along) but never misses an item the code can run through a path,
//! a `use`, a method call or a trait: the rule DESIGN.md §5 asks for. A type
//! brings all of its `impl` blocks, trait impls included, since a changed
//! `impl Ord` changes what a sort does without being named.

use crate::tokens::{digest, Digest};
use proc_macro2::TokenStream;
use quote::ToTokens;
use std::collections::{BTreeSet, HashMap};
use syn::{ImplItem, Item, TraitItem, UseTree};

/// One item of the indexed code.
#[derive(Debug)]
pub struct CodeItem {
    /// What a person reads: "`kept_features` in src/features.rs",
    /// "`impl Ord for Row` in src/model.rs".
    pub label: String,
    /// blake3 of the item's tokens (comments and docs left out).
    pub hash: [u8; 32],
    /// The names the item answers to.
    names: Vec<String>,
    /// The names the item mentions.
    mentions: BTreeSet<String>,
    /// The function's name, if the item is a `#[step]` function.
    step: Option<String>,
}

/// The items of some source files, by the names they answer to.
#[derive(Debug, Default)]
pub struct Index {
    items: Vec<CodeItem>,
    by_name: HashMap<String, Vec<usize>>,
}

impl Index {
    /// Adds the items of one file's source text, labelled with `path`; a file
    /// that does not parse as Rust is no code the compiler builds, and adds
    /// nothing (it returns `false`).
    pub fn add_file(&mut self, path: &str, source: &str) -> bool {
        let Ok(file) = syn::parse_file(source) else { return false };
        self.add_items(path, &file.items);
        true
    }

    fn add_items(&mut self, path: &str, items: &[Item]) {
        for item in items {
            if is_test_only(item) {
                continue;
            }
            match item {
                Item::Mod(m) => {
                    if let Some((_, inner)) = &m.content {
                        self.add_items(path, inner);
                    }
                }
                Item::Use(u) => self.add_renames(path, &u.tree),
                other => {
                    if let Some((label, names)) = describe(other) {
                        self.push(format!("`{label}` in {path}"), names, digest(other.to_token_stream()));
                        self.items.last_mut().expect("just pushed").step = step_name(other);
                    }
                }
            }
        }
    }

    /// `use a::b as c;` makes `c` another name of `b`.
    fn add_renames(&mut self, path: &str, tree: &UseTree) {
        match tree {
            UseTree::Path(p) => self.add_renames(path, &p.tree),
            UseTree::Group(g) => g.items.iter().for_each(|t| self.add_renames(path, t)),
            UseTree::Rename(r) => {
                let d = digest(r.to_token_stream());
                self.push(format!("`use {} as {}` in {path}", r.ident, r.rename), vec![r.rename.to_string()], d);
            }
            UseTree::Name(_) | UseTree::Glob(_) => {}
        }
    }

    fn push(&mut self, label: String, names: Vec<String>, d: Digest) {
        let at = self.items.len();
        for name in &names {
            self.by_name.entry(name.clone()).or_default().push(at);
        }
        self.items.push(CodeItem { label, hash: d.hash, names, mentions: d.names, step: None });
    }

    /// How many items the index holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the index holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every item reachable from the names in `roots`, through the names
    /// each reached item mentions, sorted by label; the `#[step]` function
    /// `step` itself is left out (its code is the root).
    pub fn reach<'a>(&'a self, step: &str, roots: impl IntoIterator<Item = &'a String>) -> Vec<&'a CodeItem> {
        let mut seen_names: BTreeSet<&str> = BTreeSet::new();
        let mut reached: BTreeSet<usize> = BTreeSet::new();
        let mut queue: Vec<&str> = roots.into_iter().map(String::as_str).collect();
        while let Some(name) = queue.pop() {
            if !seen_names.insert(name) {
                continue;
            }
            for &at in self.by_name.get(name).into_iter().flatten() {
                if self.items[at].step.as_deref() == Some(step) {
                    continue;
                }
                if reached.insert(at) {
                    queue.extend(self.items[at].mentions.iter().map(String::as_str));
                    queue.extend(self.items[at].names.iter().map(String::as_str));
                }
            }
        }
        let mut items: Vec<&CodeItem> = reached.into_iter().map(|at| &self.items[at]).collect();
        items.sort_by(|a, b| a.label.cmp(&b.label).then(a.hash.cmp(&b.hash)));
        items
    }
}

/// The name of a `#[step]` (or `#[zenflow::step]`) function.
fn step_name(item: &Item) -> Option<String> {
    let Item::Fn(f) = item else { return None };
    let is_step = f.attrs.iter().any(|a| a.path().segments.last().is_some_and(|s| s.ident == "step"));
    is_step.then(|| f.sig.ident.to_string())
}

/// `#[cfg(test)]` items are not in the binary that runs the step.
fn is_test_only(item: &Item) -> bool {
    let attrs = match item {
        Item::Fn(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Const(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => return false,
    };
    attrs.iter().any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test"))
}

/// The label and the names of an item that can be reached; `None` for items
/// that run no code of their own (`extern crate`, bare tokens).
fn describe(item: &Item) -> Option<(String, Vec<String>)> {
    let one = |i: &syn::Ident| Some((i.to_string(), vec![i.to_string()]));
    match item {
        Item::Fn(i) => one(&i.sig.ident),
        Item::Const(i) => one(&i.ident),
        Item::Static(i) => one(&i.ident),
        Item::Struct(i) => one(&i.ident),
        Item::Union(i) => one(&i.ident),
        Item::Type(i) => one(&i.ident),
        Item::TraitAlias(i) => one(&i.ident),
        Item::Enum(i) => {
            // `use Kind::*;` lets code name a variant alone.
            let mut names = vec![i.ident.to_string()];
            names.extend(i.variants.iter().map(|v| v.ident.to_string()));
            Some((i.ident.to_string(), names))
        }
        Item::Trait(i) => {
            let mut names = vec![i.ident.to_string()];
            names.extend(i.items.iter().filter_map(|t| match t {
                TraitItem::Fn(f) => Some(f.sig.ident.to_string()),
                TraitItem::Const(c) => Some(c.ident.to_string()),
                TraitItem::Type(t) => Some(t.ident.to_string()),
                _ => None,
            }));
            Some((format!("trait {}", i.ident), names))
        }
        Item::Impl(i) => {
            let ty = type_name(&i.self_ty);
            let mut names: Vec<String> = ty.iter().cloned().collect();
            names.extend(i.items.iter().filter_map(|t| match t {
                ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
                ImplItem::Const(c) => Some(c.ident.to_string()),
                ImplItem::Type(t) => Some(t.ident.to_string()),
                _ => None,
            }));
            let ty = ty.unwrap_or_else(|| "_".into());
            let label = match &i.trait_ {
                Some((_, path, _)) => format!("impl {} for {ty}", path_name(path)),
                None => format!("impl {ty}"),
            };
            Some((label, names))
        }
        Item::Macro(m) => match &m.ident {
            Some(name) => Some((format!("{name}!"), vec![name.to_string()])),
            // An item-level macro call (`thread_local!`, `lazy_static!`) may
            // define items under any of the names it holds.
            None => {
                let names = digest(m.mac.tokens.clone()).names.into_iter().collect();
                Some((format!("{}!", path_name(&m.mac.path)), names))
            }
        },
        Item::ForeignMod(f) => {
            let names: Vec<String> = f
                .items
                .iter()
                .filter_map(|i| match i {
                    syn::ForeignItem::Fn(f) => Some(f.sig.ident.to_string()),
                    syn::ForeignItem::Static(s) => Some(s.ident.to_string()),
                    _ => None,
                })
                .collect();
            Some(("extern block".into(), names))
        }
        _ => None,
    }
}

/// The name a type's impls are found by: `Row` for `Row`, `&Row`, `Row<T>`,
/// `model::Row`.
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        syn::Type::Reference(r) => type_name(&r.elem),
        syn::Type::Paren(p) => type_name(&p.elem),
        syn::Type::Group(g) => type_name(&g.elem),
        syn::Type::Slice(s) => type_name(&s.elem),
        syn::Type::Array(a) => type_name(&a.elem),
        _ => None,
    }
}

fn path_name(path: &syn::Path) -> String {
    path.segments.last().map(|s| s.ident.to_string()).unwrap_or_default()
}

/// The names `tokens` mentions (a step's own code, the roots of its reach).
pub(crate) fn mentions(tokens: TokenStream) -> (blake3::Hash, BTreeSet<String>) {
    let d = digest(tokens);
    (blake3::Hash::from(d.hash), d.names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(index: &Index, roots: &[&str]) -> Vec<String> {
        let roots: Vec<String> = roots.iter().map(|s| s.to_string()).collect();
        index.reach("none", &roots).into_iter().map(|i| i.label.clone()).collect()
    }

    #[test]
    fn reaches_through_calls_types_impls_consts_and_renames() {
        let mut index = Index::default();
        assert!(index.add_file(
            "src/lib.rs",
            r#"
            use crate::more::deep as renamed;
            const LIMIT: usize = 3;
            pub struct Row { v: f64 }
            impl Ord for Row { fn cmp(&self, o: &Self) -> Ordering { todo!() } }
            impl Row { pub fn new() -> Row { Row { v: helper() } } }
            fn helper() -> f64 { renamed() }
            fn unrelated() {}
            mod more { pub fn deep() -> f64 { 1.0 } }
            #[cfg(test)] mod tests { fn helper() {} }
            "#
        ));
        assert_eq!(
            labels(&index, &["Row"]),
            [
                "`Row` in src/lib.rs",
                "`deep` in src/lib.rs",
                "`helper` in src/lib.rs",
                "`impl Ord for Row` in src/lib.rs",
                "`impl Row` in src/lib.rs",
                "`use deep as renamed` in src/lib.rs",
            ]
        );
        assert_eq!(labels(&index, &["LIMIT"]), ["`LIMIT` in src/lib.rs"]);
        assert!(labels(&index, &["nothing"]).is_empty());
    }

    #[test]
    fn a_file_that_does_not_parse_adds_nothing() {
        let mut index = Index::default();
        assert!(!index.add_file("tests/ui/fail.rs", "fn broken( {"));
        assert!(index.is_empty());
    }
}
