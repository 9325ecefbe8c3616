//! Merging a duplicate's state into the instance kept, after a split healed under
//! `Divergence` (`#[on_conflict]`): the loser sends, the winner merges.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::HubInner;
use crate::child::erased::ErasedChild;
use crate::core::engine::Route;
use crate::events::HubEvent;
use crate::net::error::TransportError;
use crate::net::wire::{Merge, MergeStaged, Request, Response};
use crate::node::NodeId;

/// How long the sender waits before it asks again a node restarting the instance kept.
const MERGE_RETRY: Duration = Duration::from_millis(20);

impl HubInner {
    /// Stops the duplicate `child`, which lost to the instance on `into`, and has its
    /// state merged there; reports [`HubEvent::ChildStopped`] and
    /// [`HubEvent::DuplicateMerged`].
    pub(super) async fn merge_duplicate(
        self: Arc<Self>,
        id: Arc<str>,
        child: Arc<dyn ErasedChild>,
        into: NodeId,
    ) {
        let type_name = child.type_name();
        let Some(state) = child.take_for_merge().await else {
            // Stopped meanwhile (by a stop of the id): nothing of it is left to merge.
            return;
        };
        let me = self.me();
        self.emit(HubEvent::ChildStopped {
            id: id.to_string(),
            node: me,
        });
        let error = match state {
            Ok(state) => self.send_merge(&id, type_name, state, into).await.err(),
            Err(e) => Some(e),
        };
        match &error {
            None => tracing::info!(%id, %into, "merged a duplicate into the instance kept"),
            Some(e) => tracing::warn!(%id, %into, "could not merge a duplicate: {e}"),
        }
        self.emit(HubEvent::DuplicateMerged {
            id: id.to_string(),
            into,
            from: me,
            error,
        });
    }

    /// Sends a duplicate's state to the instance of `id` on `to`, following it if it
    /// lives elsewhere by now, until the call timeout.
    async fn send_merge(
        &self,
        id: &str,
        type_name: &str,
        state: Vec<u8>,
        mut to: NodeId,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.call_timeout;
        let state = serde_bytes::ByteBuf::from(state);
        loop {
            let answer = if to == self.me() {
                self.merge_here(id, type_name, state.to_vec()).await
            } else {
                let merge = Merge {
                    id: id.to_string(),
                    type_name: type_name.to_string(),
                    state: state.clone(),
                };
                let size = state.len() + id.len() + type_name.len();
                // Whole in one frame, or, too large for one, in parts (as a big move's
                // state).
                let staged = |transfer| Request::MergeStaged(MergeStaged { transfer });
                let sent = self
                    .send_whole_or_staged(
                        to,
                        (merge, size),
                        (Duration::MAX, deadline),
                        Request::Merge,
                        staged,
                    )
                    .await;
                match sent {
                    Ok(answer) => answer,
                    Err(TransportError::Encode(e)) => {
                        return Err(format!("could not encode the state: {e}"))
                    }
                    Err(e) => return Err(format!("{to} did not answer: {e:?}")),
                }
            };
            match answer {
                Response::Merged(result) => return result,
                Response::NotHere { owner } => {
                    if Instant::now() >= deadline {
                        return Err(format!("{id} was not found running in time"));
                    }
                    if owner == to {
                        tokio::time::sleep(MERGE_RETRY).await;
                    }
                    to = owner;
                }
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
    }

    /// Merges a duplicate's state into the instance of `id` running here; `NotHere` if
    /// it runs elsewhere, or is being restarted or moved here (ask again in a moment).
    pub(super) async fn merge_here(&self, id: &str, type_name: &str, state: Vec<u8>) -> Response {
        let route = self.engine.read().unwrap().route(id);
        match route {
            Route::Local(child) if child.type_name() == type_name => {
                match child.merge(state).await {
                    Some(merged) => Response::Merged(merged),
                    // It moved away (or stopped) meanwhile: ask where it is now.
                    None => match self.engine.read().unwrap().route(id) {
                        Route::Remote(owner) => Response::NotHere { owner },
                        _ => Response::NotHere { owner: self.me() },
                    },
                }
            }
            Route::Local(child) => Response::Merged(Err(format!(
                "{id} is a {} here, not a {type_name}",
                child.type_name()
            ))),
            Route::Remote(owner) => Response::NotHere { owner },
            Route::LocalMissing { pending: true } => Response::NotHere { owner: self.me() },
            Route::LocalMissing { pending: false } => {
                Response::Merged(Err(format!("{id} does not run here")))
            }
        }
    }
}
