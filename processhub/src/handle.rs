//! What generated handles and constructors call: routing, retries, start and stop.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use kameo::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::component::{self, AskFailure, Child, ComponentActor, Dispatch};
use crate::error::{CallError, StartError, StopError};
use crate::hub::{Hub, Route};
use crate::options::StartOptions;
use crate::transport::{TransportError, RECONNECT_WAIT};
use crate::wire::{Request, Response, StartItem, StartOutcome};

/// The untyped core of every generated handle: a hub and a child id.
#[doc(hidden)]
#[derive(Clone)]
pub struct HandleCore {
    hub: Hub,
    id: Arc<str>,
}

impl std::fmt::Debug for HandleCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("id", &self.id)
            .field("node", &self.hub.node_id())
            .finish()
    }
}

impl HandleCore {
    /// A handle on `id` through `hub`.
    pub fn new(hub: &Hub, id: impl Into<String>) -> Self {
        Self {
            hub: hub.clone(),
            id: Arc::from(id.into()),
        }
    }

    /// The child id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hub calls go through.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Calls `method` with `msg`: on the local actor without serialization, or on the
    /// owner over the transport. Retries while the owner is moving or restarting, until
    /// the hub's call timeout. `read` calls are also retried after a lost connection, and
    /// so are writes to a synchronously replicated active/passive child (under an id its
    /// standbys know, so that a retry is applied once).
    pub async fn call<T, M, R>(
        &self,
        method: &'static str,
        read: bool,
        msg: M,
    ) -> Result<R, CallError>
    where
        T: Dispatch,
        M: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        ComponentActor<T>: Message<M, Reply = Result<R, CallError>>,
    {
        let inner = &self.hub.inner;
        let timeout = inner.call_timeout;
        let deadline = Instant::now() + timeout;
        let mut msg = Some(msg);
        let mut backoff = Backoff::until(deadline);
        let mut target_override = None;
        // Whether an identified write went out to another node already.
        let mut tried_remote = false;
        let timed_out = || CallError::Timeout {
            id: self.id.to_string(),
            after: timeout,
        };
        // A write to a child with standbys carries an id, kept with its state: if its
        // primary dies with the call in flight, the retry reaches the promoted standby,
        // which answers it once.
        let call_id = if !read && T::REPLICAS > 1 && !T::ACTIVE_ACTIVE && T::SYNC_REPLICATION {
            inner.next_call_id()
        } else {
            0
        };
        if read && T::READS_ANY {
            // A standby copy here answers reads, possibly a little behind the primary.
            if let Some((copy, ctx)) = inner.standby_copy(&self.id) {
                let m = msg.as_ref().expect("not taken yet");
                let args = postcard::to_allocvec(m).map_err(|e| CallError::Codec {
                    message: format!("arguments: {e}"),
                })?;
                let reply = component::read_copy::<T>(&copy, ctx, method, &args).await?;
                return postcard::from_bytes(&reply).map_err(|e| CallError::Codec {
                    message: format!("reply: {e}"),
                });
            }
        }
        loop {
            if inner.is_stopped() {
                return Err(CallError::HubStopped);
            }
            let route = match target_override.take() {
                Some(node) => Route::Remote(node),
                None => inner.route(&self.id),
            };
            match route {
                Route::Local(child) => {
                    let actual = child.type_name();
                    let Ok(child) = child.into_any().downcast::<Child<T>>() else {
                        return Err(CallError::WrongType {
                            id: self.id.to_string(),
                            expected: T::TYPE_NAME.to_string(),
                            actual: actual.to_string(),
                        });
                    };
                    // A write retried after its primary died may be known here, where
                    // its standby was promoted: its reply, not a second go. (Checked
                    // outside the actor: only this call carries this id, and its last
                    // try went to another node.)
                    if tried_remote {
                        if let Some(reply) = child.applied_reply(call_id) {
                            return postcard::from_bytes(&reply).map_err(|e| CallError::Codec {
                                message: format!("reply: {e}"),
                            });
                        }
                    }
                    // The deadline holds here too: a component busy for longer than
                    // the call timeout is a timeout, not a hang.
                    let local = async {
                        // None: stopped between the lookup and now; look again.
                        let entered = child.enter().await?;
                        let m = msg
                            .take()
                            .expect("the message is back after each failed try");
                        Some(component::ask(&entered.actor, m).await)
                    };
                    match tokio::time::timeout_at(deadline, local).await {
                        Err(_) => return Err(timed_out()),
                        Ok(None) => {}
                        Ok(Some(Ok(r))) => return Ok(r),
                        Ok(Some(Err(AskFailure::Call(e)))) => return Err(e),
                        Ok(Some(Err(AskFailure::Stopped(Some(m))))) => msg = Some(m),
                        Ok(Some(Err(AskFailure::Stopped(None)))) => {
                            return Err(CallError::NotFound {
                                id: self.id.to_string(),
                            })
                        }
                    }
                }
                Route::LocalMissing { pending } => {
                    if !pending {
                        return Err(CallError::NotFound {
                            id: self.id.to_string(),
                        });
                    }
                }
                Route::Remote(node) => {
                    tried_remote = call_id != 0;
                    let m = msg.as_ref().expect("kept for remote calls");
                    let args = postcard::to_allocvec(m).map_err(|e| CallError::Codec {
                        message: format!("arguments: {e}"),
                    })?;
                    let max = inner.transport.max_frame();
                    if args.len() > max {
                        return Err(CallError::TooLarge {
                            size: args.len(),
                            max,
                        });
                    }
                    let req = Request::Call {
                        id: Cow::Borrowed(&self.id),
                        type_name: Cow::Borrowed(T::TYPE_NAME),
                        method: Cow::Borrowed(method),
                        args: Cow::Owned(args),
                        call_id,
                    };
                    match inner
                        .transport
                        .request_within(node, req, RECONNECT_WAIT, deadline)
                        .await
                    {
                        Ok(Response::Reply(Ok(bytes))) => {
                            return postcard::from_bytes(&bytes).map_err(|e| CallError::Codec {
                                message: format!("reply: {e}"),
                            })
                        }
                        Ok(Response::Reply(Err(CallError::NotFound { id }))) => {
                            if !inner.retry_after_not_found(&self.id, node) {
                                return Err(CallError::NotFound { id });
                            }
                        }
                        Ok(Response::Reply(Err(e))) => return Err(e),
                        Ok(Response::NotHere { owner }) => {
                            if owner != node {
                                target_override = Some(owner);
                            }
                        }
                        Ok(other) => {
                            return Err(CallError::Codec {
                                message: format!("unexpected response {other:?}"),
                            })
                        }
                        Err(TransportError::NotConnected) => {}
                        // A read, or a write its child will recognise: try again.
                        Err(TransportError::Lost) if read || call_id != 0 => {}
                        Err(TransportError::Lost) => {
                            return Err(CallError::ConnectionLost {
                                id: self.id.to_string(),
                                node,
                            })
                        }
                        Err(TransportError::Timeout) => return Err(timed_out()),
                        Err(TransportError::TooLarge { size, max }) => {
                            return Err(CallError::TooLarge { size, max })
                        }
                        Err(TransportError::Encode(message)) => {
                            return Err(CallError::Codec { message })
                        }
                    }
                }
            }
            if target_override.is_some() {
                continue;
            }
            if !backoff.wait().await {
                return Err(timed_out());
            }
        }
    }
}

/// The pause between two tries of a call, start or stop: from 1 ms, doubling up to
/// 50 ms, never past the deadline.
pub(crate) struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            next: Duration::from_millis(1),
            deadline,
        }
    }

    /// Sleeps before the next try; false (without sleeping) if it would end past the
    /// deadline.
    pub(crate) async fn wait(&mut self) -> bool {
        if Instant::now() + self.next >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_millis(50));
        true
    }
}

fn check_id(id: &str) -> Result<(), StartError> {
    if id.is_empty() {
        Err(StartError::EmptyId)
    } else {
        Ok(())
    }
}

fn outcome_to_result(id: &str, o: StartOutcome, hub: &Hub) -> Result<(), StartError> {
    match o {
        StartOutcome::Started { .. } => Ok(()),
        StartOutcome::AlreadyStarted { node } => Err(StartError::AlreadyStarted {
            id: id.to_string(),
            node,
        }),
        StartOutcome::UnknownType { node } => Err(StartError::UnknownType {
            type_name: String::new(),
            node,
        }),
        StartOutcome::Failed { message } if message == "timeout" => Err(StartError::Timeout {
            id: id.to_string(),
            after: hub.inner.call_timeout,
        }),
        StartOutcome::Failed { message } if hub.inner.is_stopped() => {
            let _ = message;
            Err(StartError::HubStopped)
        }
        StartOutcome::Failed { message } => Err(StartError::Codec { message }),
    }
}

/// Starts many children of type `T`; one result per item, in order.
#[doc(hidden)]
pub async fn start_many<T: Dispatch>(
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
    for (id, state) in items {
        let mut node = None;
        let checked = check_id(&id).and_then(|()| {
            node = placer.place(&id).map_err(|reason| StartError::Placement {
                id: id.clone(),
                reason,
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
                });
                states.push(Some(state));
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let ids: Vec<String> = batch.iter().map(|i| i.id.clone()).collect();
    let outcomes = hub
        .inner
        .start_items(batch, 0, |i, _, args| {
            let state = states[i]
                .take()
                .ok_or_else(|| "started twice".to_string())?;
            Ok(component::spawn_typed(state, args))
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

/// Stops the child `id` of type `T`, wherever it runs.
#[doc(hidden)]
pub async fn stop<T: Dispatch>(hub: &Hub, id: &str) -> Result<(), StopError> {
    if id.is_empty() {
        return Err(StopError::NotFound { id: String::new() });
    }
    hub.inner.stop_routed(id, T::TYPE_NAME).await
}
