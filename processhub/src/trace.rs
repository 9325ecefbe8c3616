//! Trace context: a call's trace id, carried from the caller to the node that serves
//! it, so that the spans of one request on every node can be found together.
//!
//! `tracing` spans have no identity across processes. So when the caller's
//! `processhub.call` span is enabled (a subscriber wants `processhub` at debug level),
//! the call gets a trace id: the one of the call being served on this task if any
//! (a component method calling another component continues its caller's trace), else
//! a new one. The id is a field of the span, travels in the frame
//! (`Request::TracedCall`, only then: an untraced call's bytes are unchanged), and the
//! serving node runs the method in a `processhub.serve` span with the same `trace_id`,
//! and with it as [`current_trace_id`] for the calls it makes in turn.

use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static TRACE: u64;
}

/// The trace id of the call this task serves (a component method called from
/// another node with tracing on), if any: to put in your own logs, or to carry on.
pub fn current_trace_id() -> Option<u64> {
    TRACE.try_with(|t| *t).ok()
}

/// The trace id a call made now carries: the current one, or a new one.
pub(crate) fn trace_for_call(incarnation: u64) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    current_trace_id().unwrap_or_else(|| {
        // Unique enough across nodes: this node's incarnation mixed with a counter.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut z = incarnation ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)).max(1)
    })
}

/// Runs `f` as serving a call of trace `trace`.
pub(crate) async fn serving<F: std::future::Future>(trace: u64, f: F) -> F::Output {
    TRACE.scope(trace, f).await
}
