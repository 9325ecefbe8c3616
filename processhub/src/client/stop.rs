//! Stops from generated code: follows the registry to wherever the child runs.

use tokio::time::Instant;

use super::retry::Backoff;
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
    stop_routed(&hub.inner, id, T::TYPE_NAME).await
}

/// Stops `id` wherever it runs, following the registry.
async fn stop_routed(hub: &HubInner, id: &str, type_name: &str) -> Result<(), StopError> {
    let deadline = Instant::now() + hub.call_timeout;
    let mut backoff = Backoff::until(deadline);
    let mut target_override = None;
    loop {
        if hub.is_stopped() {
            return Err(StopError::HubStopped);
        }
        let target = target_override
            .take()
            .unwrap_or_else(|| match hub.route(id) {
                Route::Local(_) | Route::LocalMissing { .. } => hub.me,
                Route::Remote(n) => n,
            });
        let outcome = if target == hub.me {
            Ok(hub.stop_local(id, type_name).await)
        } else {
            let req = Request::Stop(Stop {
                id: id.to_string(),
                type_name: type_name.to_string(),
            });
            match hub
                .transport
                .request_within(target, req, RECONNECT_WAIT, deadline)
                .await
            {
                Ok(Response::Stopped(o)) => Ok(o),
                Ok(_) => Err(()),
                Err(TransportError::Timeout) => {
                    return Err(StopError::Timeout {
                        id: id.to_string(),
                        after: hub.call_timeout,
                    })
                }
                Err(_) => Err(()),
            }
        };
        match outcome {
            Ok(StopOutcome::Stopped) => return Ok(()),
            Ok(StopOutcome::WrongType { actual }) => {
                return Err(StopError::WrongType {
                    id: id.to_string(),
                    expected: type_name.to_string(),
                    actual,
                })
            }
            Ok(StopOutcome::NotHere { owner }) if owner != target => {
                target_override = Some(owner);
            }
            Ok(StopOutcome::NotFound) | Ok(StopOutcome::NotHere { .. }) => {
                if !hub.retry_after_not_found(id, target) {
                    return Err(StopError::NotFound { id: id.to_string() });
                }
            }
            Err(()) => {}
        }
        if !backoff.wait().await {
            return Err(StopError::Timeout {
                id: id.to_string(),
                after: hub.call_timeout,
            });
        }
    }
}
