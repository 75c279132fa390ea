//! Riding out a short outage of the database.
//!
//! A restart, a failover or a dropped connection makes PostgreSQL refuse
//! connections ("the database system is starting up"), end sessions
//! ("terminating connection due to administrator command") or close them
//! without a word. Each is worth waiting for: the store retries, with
//! backoff, for a bounded window ([`DEFAULT_WINDOW`], the stack's
//! `retry_timeout`) from the first failure of an operation, and the batch
//! replays what the lost transaction held (see [`super::batch`]). What no
//! wait can mend (a password, a constraint, a syntax error) fails at once.

use std::time::Duration;
use tokio::time::Instant;

/// How long an operation keeps retrying from its first failure, unless the
/// stack says otherwise: long enough for a server restart or a failover.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// The first wait; each next one is twice as long, at most [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Whether the database's error `e` may pass with time: the connection is
/// gone, the server is starting, stopping or out of connections, or the
/// transaction lost a serialization race.
pub(super) fn transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => transient_state(code.code()),
        // No SQLSTATE: the client's own error. Transient when the
        // connection is closed or could not be made, not when a value did
        // not convert or the server's certificate was refused.
        None => e.is_closed() || network_cause(e),
    }
}

/// Whether SQLSTATE `code` is one that waiting can mend.
fn transient_state(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || matches!(
            code,
            "57P01" // admin_shutdown
            | "57P02" // crash_shutdown
            | "57P03" // cannot_connect_now: starting up, shutting down, in recovery
            | "53300" // too_many_connections
            | "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available: a deletion's NOWAIT lock met a writer, which commits within moments
        )
}

/// Whether `e` comes from the network failing (refused, reset, timed out),
/// not from a TLS handshake that refused the server (also an I/O error).
fn network_cause(e: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind::*;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | UnexpectedEof
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
                    | NetworkDown
                    | AddrNotAvailable
            );
        }
        source = s.source();
    }
    false
}

/// Whether getting a connection from the pool failed transiently.
pub(super) fn transient_pool(e: &deadpool_postgres::PoolError) -> bool {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => transient(pg),
        deadpool_postgres::PoolError::Timeout(_) => true,
        _ => false,
    }
}

/// The tries of one operation: when it first failed, how often, and the
/// pause before the next.
#[derive(Debug)]
pub(super) struct Attempts {
    window: Duration,
    first_failure: Option<Instant>,
    failures: u32,
}

impl Attempts {
    /// An operation that has not failed yet, retried for `window`.
    pub(super) fn new(window: Duration) -> Self {
        Attempts { window, first_failure: None, failures: 0 }
    }

    /// Waits before the next try after the failure `reason`, or, when the
    /// window has passed, says how long it tried and why it stopped.
    pub(super) async fn pause(&mut self, reason: &str) -> Result<(), String> {
        let since = *self.first_failure.get_or_insert_with(Instant::now);
        self.failures += 1;
        let elapsed = since.elapsed();
        if elapsed >= self.window {
            return Err(format!(
                "the database did not come back within {:.0?} ({} tries): {reason}",
                self.window, self.failures
            ));
        }
        let pause = FIRST_PAUSE.saturating_mul(1 << self.failures.min(6).saturating_sub(1)).min(MAX_PAUSE);
        if self.failures == 1 {
            tracing::warn!("{reason}; retrying for up to {:?}", self.window);
        }
        tokio::time::sleep(pause.min(self.window - elapsed)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_that_time_can_mend_are_transient() {
        for code in ["08006", "08001", "57P01", "57P03", "40001", "40P01", "53300"] {
            assert!(transient_state(code), "{code}");
        }
        // Bad password, unique violation, syntax, insufficient privilege.
        for code in ["28P01", "23505", "42601", "42501", "P0001"] {
            assert!(!transient_state(code), "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_stop_after_the_window_and_say_how_long() {
        let run = async {
            let mut a = Attempts::new(Duration::from_secs(1));
            let start = tokio::time::Instant::now();
            let mut tries = 0;
            let error = loop {
                match a.pause("connection refused").await {
                    Ok(()) => tries += 1,
                    Err(e) => break e,
                }
            };
            (tries, start.elapsed(), error)
        };
        let (tries, took, error) = run.await;
        assert!((4..=8).contains(&tries), "{tries} tries");
        assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1100), "{took:?}");
        assert!(error.starts_with("the database did not come back within 1s ("), "{error}");
        assert!(error.ends_with("tries): connection refused"), "{error}");
    }
}
