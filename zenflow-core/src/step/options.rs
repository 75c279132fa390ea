//! What a step declares about how it runs (`#[step(...)]`): cache, retries,
//! timeout, resources; recorded in the plan.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Per-step options, set with `#[step(...)]` and recorded in the plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOptions {
    /// Whether results may come from cache (`cache = false` turns it off).
    pub cache: bool,
    /// How many times a failed attempt is retried (`retries = N`).
    pub retries: u32,
    /// Delay before the first retry; doubled for each further retry.
    pub retry_backoff_ms: u64,
    /// Time limit for one attempt (`timeout = "30s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The model whose versions the step's output is (`model = "name"`):
    /// each output the step records is registered as a version of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// What one attempt needs where it runs (`resources(cpus = 2, memory =
    /// "4GiB", gpus = 1)`): what distributed orchestrators reserve for it.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// How long a cached result may be reused, in milliseconds
    /// (`cache_ttl = "7d"`); older results are executed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_ms: Option<u64>,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions {
            cache: true,
            retries: 0,
            retry_backoff_ms: 200,
            timeout_ms: None,
            model: None,
            resources: Resources::default(),
            cache_ttl_ms: None,
        }
    }
}

/// What one attempt of a step needs: CPUs (fractions allowed), memory and
/// GPUs. Unset means the orchestrator's default (one CPU on Ray; no request
/// on Kubernetes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs, e.g. `0.5` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
}

impl Resources {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory_bytes.is_none() && self.gpus.is_none()
    }
}

/// Parses a size: `"512MiB"`, `"4GiB"`, `"2G"`, `"100M"`, `"64KiB"` or a
/// number of bytes (`"1048576"`). Binary units (`KiB`, `MiB`, `GiB`, `TiB`)
/// are powers of 1024, decimal ones (`K`/`KB`, `M`/`MB`, `G`/`GB`, `T`/`TB`)
/// powers of 1000. A `const fn`, so `#[step]` checks sizes at compile time.
pub const fn parse_size(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n: u64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = match n.checked_mul(10) {
            Some(m) => match m.checked_add((b[i] - b'0') as u64) {
                Some(v) => v,
                None => return None,
            },
            None => return None,
        };
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let unit: u64 = match (b.len() - i, if i < b.len() { b[i] } else { 0 }) {
        (0, _) => 1,
        (1, b'K') | (2, b'K') => 1_000,
        (1, b'M') | (2, b'M') => 1_000_000,
        (1, b'G') | (2, b'G') => 1_000_000_000,
        (1, b'T') | (2, b'T') => 1_000_000_000_000,
        (3, b'K') => 1 << 10,
        (3, b'M') => 1 << 20,
        (3, b'G') => 1 << 30,
        (3, b'T') => 1 << 40,
        _ => return None,
    };
    // The unit's spelling: `K`, `KB` or `KiB` (and so on).
    let rest = b.len() - i;
    if (rest == 2 && b[i + 1] != b'B') || (rest == 3 && (b[i + 1] != b'i' || b[i + 2] != b'B')) {
        return None;
    }
    n.checked_mul(unit)
}

impl StepOptions {
    /// The settings that differ from the defaults, as short phrases for a
    /// person (`cache off`, `retries 2 (backoff 200 ms)`, `timeout 30s`,
    /// `cpus 2`, ...); empty for a step with none.
    pub fn settings(&self) -> Vec<String> {
        let span = |ms: u64| if ms < 1000 { format!("{ms} ms") } else { crate::time::span(ms / 1000) };
        let mut out = Vec::new();
        if !self.cache {
            out.push("cache off".to_string());
        }
        if let Some(ttl) = self.cache_ttl_ms {
            out.push(format!("cache ttl {}", span(ttl)));
        }
        if self.retries > 0 {
            out.push(format!("retries {} (backoff {})", self.retries, span(self.retry_backoff_ms)));
        }
        if let Some(t) = self.timeout_ms {
            out.push(format!("timeout {}", span(t)));
        }
        if let Some(model) = &self.model {
            out.push(format!("registers model {model}"));
        }
        let r = &self.resources;
        out.extend(r.cpus.map(|c| format!("cpus {c}")));
        out.extend(r.memory_bytes.map(|m| format!("memory {} MiB", m >> 20)));
        out.extend(r.gpus.map(|g| format!("gpus {g}")));
        out
    }

    /// The per-attempt time limit.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// How long to wait after failed attempt `attempt` (1-based) before the
    /// next one: the backoff, doubled for each retry after the first.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Duration::from_millis(self.retry_backoff_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16)))
    }
}

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"` into milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    let unit = match s[split..].trim() {
        "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_differs_from_the_defaults() {
        assert!(StepOptions::default().settings().is_empty());
        let options = StepOptions {
            cache: false,
            retries: 2,
            timeout_ms: Some(90_000),
            cache_ttl_ms: Some(86_400_000),
            model: Some("iris".into()),
            resources: Resources { cpus: Some(0.5), memory_bytes: Some(2 << 30), gpus: Some(1) },
            ..StepOptions::default()
        };
        assert_eq!(
            options.settings(),
            [
                "cache off",
                "cache ttl 1d 0h",
                "retries 2 (backoff 200 ms)",
                "timeout 1m 30s",
                "registers model iris",
                "cpus 0.5",
                "memory 2048 MiB",
                "gpus 1"
            ]
        );
    }
}
