//! Starts from generated constructors: placement, checks, batches per node.

use crate::child::component::Dispatch;
use crate::child::life::spawn_typed;
use crate::core::item::{StartFailure, StartItem, StartOutcome};
use crate::error::StartError;
use crate::hub::{Hub, MAX_ID_LEN};
use crate::options::StartOptions;

fn check_id(id: &str) -> Result<(), StartError> {
    if id.is_empty() {
        Err(StartError::EmptyId)
    } else if id.len() > MAX_ID_LEN {
        Err(StartError::IdTooLong {
            len: id.len(),
            max: MAX_ID_LEN,
        })
    } else {
        Ok(())
    }
}

fn outcome_to_result(id: &str, o: StartOutcome, hub: &Hub) -> Result<(), StartError> {
    let id = id.to_string();
    match o {
        StartOutcome::Started { .. } => Ok(()),
        StartOutcome::AlreadyStarted { node } => Err(StartError::AlreadyStarted { id, node }),
        StartOutcome::UnknownType { node } => Err(StartError::UnknownType {
            type_name: String::new(),
            node,
        }),
        StartOutcome::TimedOut => Err(StartError::Timeout {
            id,
            after: hub.inner.call_timeout,
        }),
        StartOutcome::HookPanicked { node, message } => Err(StartError::Hook { id, node, message }),
        StartOutcome::BadState { message, .. } => Err(StartError::Codec { message }),
        StartOutcome::ShuttingDown { node } if node == hub.node_id() => Err(StartError::HubStopped),
        StartOutcome::ShuttingDown { node } => Err(StartError::Unreachable {
            id,
            node,
            reason: "it is shutting down".into(),
        }),
        StartOutcome::Unreachable { .. } | StartOutcome::Failed { .. }
            if hub.inner.is_stopped() =>
        {
            Err(StartError::HubStopped)
        }
        StartOutcome::Unreachable { node, message } => Err(StartError::Unreachable {
            id,
            node,
            reason: message,
        }),
        StartOutcome::Failed { message } => Err(StartError::Codec { message }),
        StartOutcome::NoQuorum { node } => Err(StartError::NoQuorum { id, node }),
        StartOutcome::Contended { node } => Err(StartError::Contended { id, node }),
    }
}

/// Starts many children of type `T`; one result per item, in order.
#[doc(hidden)]
pub async fn start_many<T: Dispatch>(
    hub: &Hub,
    items: Vec<(String, T)>,
    options: StartOptions,
) -> Vec<Result<(), StartError>> {
    let span = tracing::debug_span!(
        "processhub.start",
        r#type = T::TYPE_NAME,
        children = items.len()
    );
    tracing::Instrument::instrument(start_traced(hub, items, options), span).await
}

async fn start_traced<T: Dispatch>(
    hub: &Hub,
    items: Vec<(String, T)>,
    options: StartOptions,
) -> Vec<Result<(), StartError>> {
    let flags = options.flags::<T>();
    if hub.inner.is_stopped() {
        return items.iter().map(|_| Err(StartError::HubStopped)).collect();
    }
    // Where each child starts, unless the ring decides (on the node that owns it).
    let mut placer = hub.inner.placer(T::TYPE_NAME, options.named());
    let mut results: Vec<Option<Result<(), StartError>>> = Vec::with_capacity(items.len());
    let mut batch = Vec::with_capacity(items.len());
    let mut states = Vec::with_capacity(items.len());
    let mut index = Vec::with_capacity(items.len());
    // A start state travels in every node's registry: at most half a frame.
    let max = hub.inner.batch_bytes();
    let given = crate::metadata::shared(options.meta().clone());
    let too_large = given.as_ref().and_then(|m| m.check().err());
    let hooked = hub.inner.events.has_before_start(T::TYPE_NAME);
    for (id, mut state) in items {
        let mut node = None;
        let mut meta = given.clone();
        let checked = check_id(&id).and_then(|()| {
            if hooked {
                let mut metadata = meta.as_deref().cloned().unwrap_or_default();
                hub.inner
                    .events
                    .before_start(T::TYPE_NAME, &id, &mut state, &mut metadata)
                    .map_err(|reason| StartError::Refused {
                        id: id.clone(),
                        reason,
                    })?;
                metadata
                    .check()
                    .map_err(|size| StartError::MetadataTooLarge {
                        id: id.clone(),
                        size,
                        max: crate::MAX_METADATA,
                    })?;
                meta = crate::metadata::shared(metadata);
            } else if let Some(size) = too_large {
                return Err(StartError::MetadataTooLarge {
                    id: id.clone(),
                    size,
                    max: crate::MAX_METADATA,
                });
            }
            node = placer.place(&id).map_err(|reason| StartError::Placement {
                id: id.clone(),
                reason: reason.to_string(),
            })?;
            let bytes = postcard::to_allocvec(&state).map_err(|e| StartError::Codec {
                message: e.to_string(),
            })?;
            if bytes.len() > max {
                return Err(StartError::TooLarge {
                    size: bytes.len(),
                    max,
                });
            }
            Ok(bytes)
        });
        match checked {
            Ok(bytes) => {
                index.push(results.len());
                results.push(None);
                batch.push(StartItem {
                    id,
                    type_name: T::TYPE_NAME.to_string(),
                    state: bytes,
                    epoch: 0,
                    start_state: None,
                    flags,
                    recent: Vec::new(),
                    node,
                    meta: meta.clone(),
                });
                states.push(Some(state));
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let ids: Vec<String> = batch.iter().map(|i| i.id.clone()).collect();
    let outcomes = hub
        .inner
        .start_items(batch, 0, None, |i, _, args| {
            let state = states[i]
                .take()
                .ok_or_else(|| StartFailure::State("started twice".to_string()))?;
            Ok(spawn_typed(state, args))
        })
        .await;
    for ((slot, id), o) in index.into_iter().zip(&ids).zip(outcomes) {
        let r = outcome_to_result(id, o, hub).map_err(|e| match e {
            StartError::UnknownType { node, .. } => StartError::UnknownType {
                type_name: T::TYPE_NAME.to_string(),
                node,
            },
            other => other,
        });
        results[slot] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every item has a result"))
        .collect()
}

/// Starts one child of type `T`.
#[doc(hidden)]
pub async fn start<T: Dispatch>(
    hub: &Hub,
    id: String,
    state: T,
    options: StartOptions,
) -> Result<(), StartError> {
    start_many(hub, vec![(id, state)], options)
        .await
        .pop()
        .expect("one item, one result")
}
