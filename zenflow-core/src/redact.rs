//! One redaction for every text that leaves a process: step errors, logs
//! and check messages in the store, run errors, reports, job records and
//! the CLI's own messages.
//!
//! Backends put whatever they hold into their errors: a server's response
//! body, a connection URL, a header. [`text`] replaces, with `***`:
//! - the values of the secrets registered with [`register_secret`] (the
//!   stack file registers every secret it resolved from the environment);
//! - the password of a URL (`postgres://user:pw@host`);
//! - the value of a `key=value` pair whose key names a secret as
//!   [`is_secret_name`] judges (`PGPASSWORD=`, `access_token=`,
//!   `aws_secret_access_key=`, `api_key=`).

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

/// What a redacted value reads as.
pub const HIDDEN: &str = "***";

/// Values shorter than this are not registered: redacting every `1` or
/// `dev` in a text would hide more than it protects.
pub const MIN_SECRET_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());
/// Whether any secret is registered (read without the lock).
static ANY_SECRET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Words that make a `key=value` pair's value a secret.
const SECRET_KEYS: [&str; 4] = ["password", "passwd", "token", "secret"];

/// Hides `value` in every text redacted from now on, in this process.
pub fn register_secret(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(PoisonError::into_inner);
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first: a secret that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        ANY_SECRET.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether [`text`] could hide anything in `bytes`: a cheap test, for the
/// paths where even a lock or a UTF-8 check per write is too much (the
/// crash-safe passing on of a step's output).
fn may_hide(bytes: &[u8]) -> bool {
    ANY_SECRET.load(std::sync::atomic::Ordering::Acquire)
        || bytes.contains(&b'=')
        || bytes.windows(3).any(|w| w == b"://")
}

/// Whether a name (an environment variable's, a `key=value`'s) says its
/// value is a secret (`PGPASSWORD`, `AWS_SECRET_ACCESS_KEY`,
/// `ZENFLOW_DEPLOY_TOKEN`, ...).
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|k| lower.contains(k)) || lower.ends_with("_key") || lower.contains("credential")
}

/// `s` with every secret it shows replaced by `***` (see the module docs).
/// Borrows when there is nothing to hide.
pub fn text(s: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(s);
    if ANY_SECRET.load(std::sync::atomic::Ordering::Acquire) {
        let secrets = SECRETS.read().unwrap_or_else(PoisonError::into_inner);
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), HIDDEN));
            }
        }
    }
    if out.contains("://") {
        if let Some(hidden) = url_passwords(&out) {
            out = Cow::Owned(hidden);
        }
    }
    if out.contains('=') {
        if let Some(hidden) = secret_pairs(&out) {
            out = Cow::Owned(hidden);
        }
    }
    out
}

/// `bytes` redacted, when they are UTF-8 text that shows a secret (`None`:
/// pass them on as they are). For writers of raw output.
pub fn bytes(bytes: &[u8]) -> Option<String> {
    if !may_hide(bytes) {
        return None;
    }
    match text(std::str::from_utf8(bytes).ok()?) {
        Cow::Owned(hidden) => Some(hidden),
        Cow::Borrowed(_) => None,
    }
}

/// Redacts `s` in place.
pub fn in_place(s: &mut String) {
    if let Cow::Owned(hidden) = text(s) {
        *s = hidden;
    }
}

/// Redacts an optional text in place.
pub fn option_in_place(s: &mut Option<String>) {
    if let Some(s) = s {
        in_place(s);
    }
}

/// Characters that end a value in running text.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | '\'' | '\\' | ')' | ']' | '}' | '<' | '>' | '`')
}

/// Hides the password of every `scheme://user:password@host` in `s`
/// (`None`: there is none).
fn url_passwords(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or end of value;
        // its userinfo at the last `@` inside it.
        let authority_end = tail.find(|c: char| matches!(c, '/' | '?' | '#') || ends_value(c)).unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@').and_then(|at| authority[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) if at > colon + 1 => {
                out.push_str(&authority[..=colon]);
                out.push_str(HIDDEN);
                out.push_str(&authority[at..]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Hides the value of every `key=value` whose key names a secret.
fn secret_pairs(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let (before, after) = (&rest[..eq], &rest[eq + 1..]);
        // The key: the word right before `=`.
        let key_start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'));
        let key = &before[key_start.map_or(0, |k| k + 1)..];
        out.push_str(before);
        out.push('=');
        // A quoted value runs to its closing quote, kept around `***`.
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'');
        let (start, end) = match quote {
            Some(q) => (1, after[1..].find(q).map_or(after.len(), |e| e + 1)),
            None => (0, after.find(ends_value).unwrap_or(after.len())),
        };
        let value = &after[start..end];
        if !key.is_empty() && !value.is_empty() && value != HIDDEN && is_secret_name(key) {
            out.push_str(&after[..start]);
            out.push_str(HIDDEN);
            changed = true;
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_passwords_lose_the_password_only() {
        assert_eq!(
            text("connect to postgres://zenflow:s3cr3t@db.internal:5432/zenflow?sslmode=require failed"),
            "connect to postgres://zenflow:***@db.internal:5432/zenflow?sslmode=require failed"
        );
        assert_eq!(text("s3://bucket/prefix and http://host:8080/x"), "s3://bucket/prefix and http://host:8080/x");
        assert_eq!(text("user@host: no scheme"), "user@host: no scheme");
        // A password with `@` in it: the userinfo ends at the last `@`.
        assert_eq!(text("redis://u:p@ss@cache:6379"), "redis://u:***@cache:6379");
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
        assert_eq!(bytes(b"at https://u:pw@host/x").as_deref(), Some("at https://u:***@host/x"));
        assert_eq!(bytes(b"plain output"), None);
        assert_eq!(bytes(b"https://u:pw@host \xff"), None, "not UTF-8: passed on as it is");
    }

    #[test]
    fn secret_pairs_lose_their_values() {
        assert_eq!(text("PGPASSWORD=hunter22 psql"), "PGPASSWORD=*** psql");
        assert_eq!(text("?access_token=abc.def&page=2"), "?access_token=***&page=2");
        assert_eq!(text("aws_secret_access_key=AKIA/xyz+1, region=eu"), "aws_secret_access_key=***, region=eu");
        assert_eq!(text("password=\"quoted value\" next"), "password=\"***\" next");
        assert_eq!(text("secret='x y"), "secret='***", "an unclosed quote hides the rest");
        assert_eq!(text("max_depth=5 token= x"), "max_depth=5 token= x");
        assert_eq!(text("a == b"), "a == b");
        assert_eq!(text("api_key=k-123 keyboard=yes"), "api_key=*** keyboard=yes", "the names' rule, in text too");
    }

    #[test]
    fn registered_secrets_are_hidden_wherever_they_appear() {
        register_secret("Zq9-unit-test-secret-value");
        register_secret("Zq9-unit-test-secret");
        register_secret("abc"); // too short to register
        assert_eq!(text("body: {\"key\":\"Zq9-unit-test-secret-value\"}"), "body: {\"key\":\"***\"}");
        assert_eq!(text("Zq9-unit-test-secret!"), "***!");
        assert_eq!(text("abc"), "abc");
        let mut record = String::from("x Zq9-unit-test-secret y");
        in_place(&mut record);
        assert_eq!(record, "x *** y");
    }

    #[test]
    fn secret_names() {
        for name in ["PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "ZENFLOW_DEPLOY_TOKEN", "GITHUB_TOKEN", "API_KEY"] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["PGHOST", "PGPORT", "S3_BUCKET", "RAY_ADDRESS", "AWS_REGION", "KEYBOARD"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
