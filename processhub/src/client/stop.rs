//! Stops from generated code: follows the registry to wherever the child runs.

use super::retry::Retry;
use crate::child::component::Dispatch;
use crate::core::item::StopOutcome;
use crate::error::StopError;
use crate::hub::HubInner;
use crate::hub::{Hub, Route};
use crate::net::error::TransportError;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::Stop;
use crate::net::wire::{Request, Response};

/// Stops the child `id` of type `T`, wherever it runs.
#[doc(hidden)]
pub async fn stop<T: Dispatch>(hub: &Hub, id: &str) -> Result<(), StopError> {
    if id.is_empty() {
        return Err(StopError::NotFound { id: String::new() });
    }
    hub.inner
        .events
        .before_stop(T::TYPE_NAME, id)
        .map_err(|reason| StopError::Refused {
            id: id.to_string(),
            reason,
        })?;
    let span = tracing::debug_span!("processhub.stop", r#type = T::TYPE_NAME, %id);
    tracing::Instrument::instrument(stop_routed(&hub.inner, id, T::TYPE_NAME), span).await
}

/// Stops `id` wherever it runs, following the registry.
async fn stop_routed(hub: &HubInner, id: &str, type_name: &str) -> Result<(), StopError> {
    let mut retry = Retry::new(hub, id, tokio::time::Instant::now());
    let timed_out = || StopError::Timeout {
        id: id.to_string(),
        after: hub.call_timeout,
    };
    // A stop whose answer was lost may have stopped the child: if the next attempt
    // finds it gone, and the registry here saw it removed since, it is stopped
    // (stopping is idempotent). The epoch it had here when a try was lost.
    let mut lost_at: Option<u64> = None;
    loop {
        if hub.is_stopped() {
            return Err(StopError::HubStopped);
        }
        let target = match retry.route() {
            Route::Local(_) | Route::LocalMissing { .. } => hub.me(),
            Route::Remote(n) => n,
        };
        let outcome = if target == hub.me() {
            Some(hub.stop_local(id, type_name).await)
        } else {
            let req = Request::Stop(Stop {
                id: id.to_string(),
                type_name: type_name.to_string(),
            });
            match hub
                .transport
                .request_within(target, req, RECONNECT_WAIT, retry.deadline())
                .await
            {
                Ok(Response::Stopped(o)) => Some(o),
                Err(TransportError::Timeout) => return Err(timed_out()),
                Err(TransportError::Lost) => {
                    // (Its removal seen here is the sign that the lost try stopped it,
                    // not its absence. Found by soak seeds 1024 and 1065: a node that
                    // never had the owner's registry, or rejoined meanwhile with a new
                    // one, took the absence for that sign.)
                    lost_at = lost_at.or(hub.registered_epoch(id));
                    None
                }
                // Not connected, or an answer of another kind: look again.
                Ok(_) | Err(_) => None,
            }
        };
        match outcome {
            Some(StopOutcome::Stopped) => return Ok(()),
            Some(StopOutcome::WrongType { actual }) => {
                return Err(StopError::WrongType {
                    id: id.to_string(),
                    expected: type_name.to_string(),
                    actual,
                })
            }
            Some(StopOutcome::NotHere { owner }) if owner != target => retry.moved(target, owner),
            Some(StopOutcome::NotFound) | Some(StopOutcome::NotHere { .. })
                if !retry.missing(target) =>
            {
                // Stopped by the try whose answer was lost, if its removal reached the
                // registry here; otherwise that try may never have arrived.
                if lost_at.is_some_and(|epoch| hub.removal_seen(id, epoch)) {
                    return Ok(());
                }
                return Err(StopError::NotFound { id: id.to_string() });
            }
            Some(StopOutcome::NoQuorum { node }) => {
                return Err(StopError::NoQuorum {
                    id: id.to_string(),
                    node,
                })
            }
            // On its way elsewhere: once the move ends, the registry says where.
            Some(StopOutcome::Moving) => {}
            Some(StopOutcome::NotFound) | Some(StopOutcome::NotHere { .. }) | None => {}
        }
        if !retry.again().await {
            return Err(timed_out());
        }
    }
}
