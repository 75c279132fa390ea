//! What a caught panic said, as text for a step's error or a store's.

/// Why a step's task ended without a value: its panic's message, or that
/// it was cancelled.
pub(crate) fn join_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the step was cancelled".into();
    }
    message(e.into_panic())
}

/// The message of a caught panic.
pub fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}
