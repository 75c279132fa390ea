//! [`Pairs`]: a sorted map of strings stored as one string.

use serde::{Deserialize, Serialize};

/// A map of strings to strings, sorted by key, kept (and serialised) as one
/// string of `key<TAB>value` lines. A plan carries hundreds of them (the
/// locked dependencies, each step's code items) and is stored and read back
/// with every run: one string costs a copy, a map one allocation per entry.
/// Keys and values hold no tab or newline (they are replaced by spaces).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pairs(String);

impl Pairs {
    /// The pairs of `text` in the form they are kept (`key<TAB>value` lines
    /// sorted by key), as `#[step]` writes them.
    pub fn from_text(text: &str) -> Pairs {
        Pairs(text.to_string())
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.lines().map(|l| l.split_once('\t').unwrap_or((l, "")))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Pairs {
    /// The entries sorted by key; of two with one key, the last given wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let map: std::collections::BTreeMap<String, String> =
            iter.into_iter().map(|(k, v)| (clean(k.as_ref()), clean(v.as_ref()))).collect();
        let mut text = String::new();
        for (k, v) in map {
            text.push_str(&k);
            text.push('\t');
            text.push_str(&v);
            text.push('\n');
        }
        Pairs(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sorted_map_in_one_string() {
        let p: Pairs =
            [("serde", "1.0.229"), ("`a b` in src/x.rs", "3f2a"), ("odd\tkey", "v\nw")].into_iter().collect();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["`a b` in src/x.rs", "odd key", "serde"]);
        assert_eq!((p.get("serde"), p.get("odd key"), p.get("nope")), (Some("1.0.229"), Some("v w"), None));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pairs>(&json).unwrap(), p);
        assert!(Pairs::default().is_empty() && Pairs::default().iter().next().is_none());
    }
}
