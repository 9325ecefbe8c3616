//! A child's metadata and tags: kept in its registry entry on every node, given at
//! start ([`StartOptions::metadata`](crate::StartOptions::metadata), or a before-start
//! hook), read with [`Hub::lookup`](crate::Hub::lookup), searched with
//! [`Hub::query_tag`](crate::Hub::query_tag), changed with
//! [`Hub::update_metadata`](crate::Hub::update_metadata). It moves, fails over and is
//! promoted with the child.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The most bytes a child's metadata may take, encoded: every node keeps it in its
/// registry, and every push of the child's entry carries it.
pub const MAX_METADATA: usize = 4096;

/// A child's metadata: string values by key, and tags (`"region:eu"`, `"tier:gold"`),
/// small and kept on every node.
///
/// ```
/// use processhub::Metadata;
///
/// let meta = Metadata::new()
///     .with("owner", "team-billing")
///     .tagged("region:eu");
/// assert_eq!(meta.get("owner"), Some("team-billing"));
/// assert!(meta.has_tag("region:eu"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Metadata {
    values: BTreeMap<String, String>,
    tags: BTreeSet<String>,
}

impl Metadata {
    /// No values, no tags.
    pub const fn new() -> Self {
        Self {
            values: BTreeMap::new(),
            tags: BTreeSet::new(),
        }
    }

    /// With `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// With the tag `tag`.
    pub fn tagged(mut self, tag: impl Into<String>) -> Self {
        self.add_tag(tag);
        self
    }

    /// Sets `key` to `value`; the value it had, if any.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.values.insert(key.into(), value.into())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Removes `key`; the value it had, if any.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// The values, by key in order.
    pub fn values(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Adds `tag`; whether it was not there.
    pub fn add_tag(&mut self, tag: impl Into<String>) -> bool {
        self.tags.insert(tag.into())
    }

    /// Removes `tag`; whether it was there.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        self.tags.remove(tag)
    }

    /// Whether it has `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// The tags, in order.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(String::as_str)
    }

    /// No values and no tags.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.tags.is_empty()
    }

    /// Its size encoded, in bytes, checked against [`MAX_METADATA`].
    pub(crate) fn check(&self) -> Result<(), usize> {
        let size = postcard::to_allocvec(self).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA {
            Err(size)
        } else {
            Ok(())
        }
    }
}

/// Metadata as an entry keeps it: nothing for a child without any (most), shared
/// between the registry, the pushes and lookups otherwise.
pub(crate) type Meta = Option<std::sync::Arc<Metadata>>;

/// `meta`, or none when it is empty.
pub(crate) fn shared(meta: Metadata) -> Meta {
    (!meta.is_empty()).then(|| std::sync::Arc::new(meta))
}

impl crate::Hub {
    /// The children whose tags include `tag` (ProcessHub's `tag_query`), from the local
    /// registry: every node's children, never the network. Sorted by id.
    pub fn query_tag(&self, tag: &str) -> Vec<crate::ChildInfo> {
        let e = self.inner.engine.read().unwrap();
        let mut found: Vec<crate::ChildInfo> = e
            .registry
            .iter()
            .filter(|(_, entry)| entry.meta.as_ref().is_some_and(|m| m.has_tag(tag)))
            .map(|(id, entry)| crate::ChildInfo::new(id, entry, &e.registry))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found
    }

    /// Replaces the metadata and tags of `id` with `metadata`, on its owner, which
    /// publishes it to every node; the other nodes see it as soon as their registry
    /// has the owner's push (this node: when this returns). Follows the child while it
    /// moves or restarts, within the hub's call timeout. Errors: `NotFound` (no such
    /// child), `TooLarge` (over [`MAX_METADATA`] encoded), `NoQuorum` (its owner is on
    /// a side without one), `Timeout`, `HubStopped`.
    pub async fn update_metadata(
        &self,
        id: &str,
        metadata: Metadata,
    ) -> Result<(), crate::CallError> {
        use crate::core::item::MetaOutcome;
        use crate::net::wire::{Request, Response, UpdateMeta};
        use crate::CallError;

        metadata.check().map_err(|size| CallError::TooLarge {
            size,
            max: MAX_METADATA,
        })?;
        let meta = shared(metadata);
        let inner = &self.inner;
        let began = tokio::time::Instant::now();
        let deadline = began + inner.call_timeout;
        // Where to ask: here first (the registry says where it runs).
        let mut target: Option<crate::NodeId> = None;
        let mut hops = 0;
        loop {
            if inner.is_stopped() {
                return Err(CallError::HubStopped);
            }
            let outcome = match target {
                None => inner.decide(|e| e.update_meta(id, meta.clone())),
                Some(owner) => {
                    let req = Request::UpdateMeta(UpdateMeta {
                        id: id.to_string(),
                        meta: meta.clone(),
                    });
                    let wait = crate::net::transport::RECONNECT_WAIT;
                    match inner
                        .transport
                        .request_within(owner, req, wait, deadline)
                        .await
                    {
                        Ok(Response::MetaUpdated(outcome)) => outcome,
                        Ok(other) => {
                            return Err(CallError::Codec {
                                message: format!(
                                    "unexpected answer to a metadata update: {other:?}"
                                ),
                            })
                        }
                        // Not connected, or lost: look again (it may have died, or moved).
                        Err(_) => MetaOutcome::Busy,
                    }
                }
            };
            match outcome {
                MetaOutcome::Updated => {
                    if let Some(owner) = target {
                        // This node shows it once the owner's push arrived.
                        while inner
                            .engine
                            .read()
                            .unwrap()
                            .registry
                            .get(id)
                            .is_some_and(|e| e.owner == owner && e.meta != meta)
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                    }
                    return Ok(());
                }
                MetaOutcome::NotFound => {
                    return Err(CallError::NotFound { id: id.to_string() });
                }
                MetaOutcome::NoQuorum => return Err(CallError::NoQuorum),
                MetaOutcome::NotHere { owner } => {
                    hops += 1;
                    target = (owner != inner.me()).then_some(owner);
                    if hops > 2 {
                        // Views differ for a moment: let them settle.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
                MetaOutcome::Busy => {
                    target = None;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CallError::Timeout {
                    id: id.to_string(),
                    after: inner.call_timeout,
                });
            }
        }
    }
}
