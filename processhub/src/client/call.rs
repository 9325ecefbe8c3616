//! Calls through a handle: one redirect and retry policy for every call.

use std::borrow::Cow;
use std::sync::Arc;

use kameo::message::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::held::HeldWait;
use super::retry::Retry;
use crate::child::component::{ask, read_copy, AskFailure, ComponentActor, Dispatch};
use crate::child::life::Child;
use crate::error::CallError;
use crate::hub::{Hub, Route};
use crate::net::error::TransportError;
use crate::net::transport::RECONNECT_WAIT;
use crate::net::wire::{Call, Request, Response};

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
        // One clock reading for the call's latency and its deadline (the runtime's
        // clock: a simulated world's when simulated).
        let began = tokio::time::Instant::now();
        let span = tracing::debug_span!(
            "processhub.call",
            r#type = T::TYPE_NAME,
            method,
            id = %self.id,
            trace_id = tracing::field::Empty
        );
        // A trace id only when someone records the span: untraced calls carry none.
        let trace = (!span.is_disabled()).then(|| {
            let trace = crate::trace::trace_for_call(self.hub.node_id().incarnation());
            span.record("trace_id", trace);
            trace
        });
        let result = tracing::Instrument::instrument(
            self.call_routed::<T, M, R>(method, read, msg, trace, began),
            span,
        )
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        };
        self.hub
            .inner
            .events
            .telemetry()
            .call(T::TYPE_NAME, method, outcome, began.elapsed());
        result
    }

    /// [`Self::call`], without its span and metrics; `trace` goes with it to another
    /// node; the call began at `began`.
    async fn call_routed<T, M, R>(
        &self,
        method: &'static str,
        read: bool,
        msg: M,
        trace: Option<u64>,
        began: tokio::time::Instant,
    ) -> Result<R, CallError>
    where
        T: Dispatch,
        M: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        ComponentActor<T>: Message<M, Reply = Result<R, CallError>>,
    {
        let inner = &self.hub.inner;
        let timeout = inner.call_timeout;
        let mut retry = Retry::new(inner, &self.id, began);
        let deadline = retry.deadline();
        let mut msg = Some(msg);
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
        // A write sent to another node: its standbys may tell this node they hold it,
        // half a round trip before its primary's reply (`crate::core::held`); whichever
        // comes first answers.
        let mut held: Option<HeldWait<'_>> = None;
        if read && T::READS_ANY {
            // A standby copy here answers reads, possibly a little behind the primary.
            if let Some(((copy, calls), ctx)) = inner.standby_copy(&self.id) {
                let m = msg.as_ref().expect("not taken yet");
                let args = postcard::to_allocvec(m).map_err(|e| CallError::Codec {
                    message: format!("arguments: {e}"),
                })?;
                let reply = Box::pin(read_copy::<T>((&copy, calls), ctx, method, &args)).await?;
                return postcard::from_bytes(&reply).map_err(|e| CallError::Codec {
                    message: format!("reply: {e}"),
                });
            }
        }
        loop {
            if inner.is_stopped() {
                return Err(CallError::HubStopped);
            }
            match retry.route() {
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
                            tracing::trace!(id = %self.id, call_id, "a retried write answered from the table here");
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
                        Some(ask(&entered.actor, m).await)
                    };
                    // The id's hash, not the child's address: the list a call waits
                    // in decides the order waiting calls wake at a tick, which must be
                    // the same in every run of a simulated world's seed.
                    let key = {
                        use std::hash::BuildHasher;
                        foldhash::fast::FixedState::default().hash_one(&*self.id) as usize
                    };
                    match inner.ticks.within(key, deadline, local).await {
                        None => return Err(timed_out()),
                        Some(None) => {}
                        Some(Some(Ok(r))) => return Ok(r),
                        Some(Some(Err(AskFailure::Call(e)))) => return Err(e),
                        Some(Some(Err(AskFailure::Stopped(Some(m))))) => msg = Some(m),
                        Some(Some(Err(AskFailure::Stopped(None)))) => {
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
                    let call = Call {
                        id: Cow::Borrowed(&self.id),
                        type_name: Cow::Borrowed(T::TYPE_NAME),
                        method: Cow::Borrowed(method),
                        args: Cow::Owned(args),
                        call_id,
                    };
                    let req = match trace {
                        Some(trace) => Request::TracedCall(call, trace),
                        None => Request::Call(call),
                    };
                    // Waiting for the standbys' word before the request goes (it is
                    // sent when `request_within` is called), so that none is missed.
                    if call_id != 0 && held.is_none() {
                        held = Some(HeldWait::new(&inner.held, call_id));
                    }
                    let sent = inner
                        .transport
                        .request_within(node, req, RECONNECT_WAIT, deadline);
                    let response = match held.as_mut() {
                        None => sent.await,
                        Some(held) => tokio::select! {
                            // In a fixed order (a simulated run replays from its seed):
                            // the primary's answer first when both are in.
                            biased;
                            response = sent => response,
                            reply = held.reply() => {
                                tracing::trace!(id = %self.id, call_id, "a write acknowledged by its standbys' word");
                                inner.events.telemetry().write_acknowledged(true);
                                return postcard::from_bytes(&reply).map_err(|e| CallError::Codec {
                                    message: format!("reply: {e}"),
                                });
                            }
                        },
                    };
                    match response {
                        Ok(Response::Reply(Ok(bytes))) => {
                            if call_id != 0 {
                                inner.events.telemetry().write_acknowledged(false);
                            }
                            return postcard::from_bytes(&bytes).map_err(|e| CallError::Codec {
                                message: format!("reply: {e}"),
                            });
                        }
                        Ok(Response::Reply(Err(CallError::NotFound { id }))) => {
                            if !retry.missing(node) {
                                return Err(CallError::NotFound { id });
                            }
                        }
                        Ok(Response::Reply(Err(e))) => return Err(e),
                        Ok(Response::NotHere { owner }) => retry.moved(node, owner),
                        Ok(other) => {
                            return Err(CallError::Codec {
                                message: format!("unexpected response {other:?}"),
                            })
                        }
                        Err(TransportError::NotConnected) => {}
                        // Its node died (was downed) with the call under way: whatever
                        // it did died with it; the registry names the new owner. Not so
                        // under `Divergence`: a node downed there may be alive on the
                        // other side of a split, its instance merged back after the
                        // heal, so a write not identified has an unknown outcome.
                        Err(TransportError::Gone)
                            if read || call_id != 0 || inner.lease().fences() => {}
                        Err(TransportError::Gone) => {
                            return Err(CallError::ConnectionLost {
                                id: self.id.to_string(),
                                node,
                            })
                        }
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
            if call_id != 0 {
                tracing::trace!(id = %self.id, call_id, "an identified write tries again");
            }
            if !retry.again().await {
                return Err(timed_out());
            }
        }
    }
}
