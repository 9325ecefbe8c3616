//! Membership and failure detection: chitchat (scuttlebutt gossip over UDP with a
//! phi-accrual failure detector), on the same port number as the hub's TCP listener.
//!
//! Chitchat's `cluster_id` is the hub id, so hubs of different ids never gossip with
//! each other even when seeded with each other's addresses. A node leaving gracefully
//! sets the `leaving` key (and tells its peers directly over TCP, which is faster).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::mpsc;

use crate::core::view::Gossip;
use crate::node::NodeId;

const LEAVING_KEY: &str = "leaving";
const DRAINING_KEY: &str = "draining";

/// Gossip settings.
#[derive(Clone, Debug)]
pub(crate) struct GossipConfig {
    pub(crate) interval: Duration,
    pub(crate) phi_threshold: f64,
}

/// A running chitchat instance, on a thread of its own.
///
/// Gossip runs on its own single-threaded runtime so that nothing the hub's runtime
/// does (a component method that computes for a second, a blocking hook, a burst of
/// moves) delays heartbeats: a node whose heartbeats stall is declared dead by the
/// others, and its children restarted elsewhere.
pub(crate) struct Membership {
    handle: ChitchatHandle,
    /// Dropped to stop the gossip thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Membership")
    }
}

impl Membership {
    /// Starts gossiping as `me` on `me.addr()` (UDP). Every change of the live set is sent
    /// on `changes`, self included, with the nodes that announced they are leaving.
    pub(crate) async fn start(
        me: NodeId,
        hub_id: &str,
        seeds: Vec<String>,
        gossip: &GossipConfig,
        changes: mpsc::UnboundedSender<Gossip>,
    ) -> Result<Self, String> {
        let chitchat_id = ChitchatId::new(me.addr().to_string(), me.incarnation(), me.addr());
        let config = ChitchatConfig {
            chitchat_id,
            cluster_id: hub_id.to_string(),
            gossip_interval: gossip.interval,
            listen_addr: me.addr(),
            seed_nodes: seeds,
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: gossip.phi_threshold,
                sampling_window_size: 1_000,
                max_interval: Duration::from_secs(10),
                initial_interval: gossip.interval,
                dead_node_grace_period: Duration::from_secs(3_600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3_600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let (runtime, stop) = gossip_thread()?;
        let handle = runtime
            .spawn(async move { spawn_chitchat(config, Vec::new(), &UdpTransport).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut watcher = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        runtime.spawn(async move {
            loop {
                let members = live_members(me, &watcher.borrow_and_update());
                if changes.send(members).is_err() {
                    return;
                }
                if watcher.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Announces this node's departure through gossip.
    pub(crate) async fn announce_leaving(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(LEAVING_KEY, "1"))
            .await;
    }

    /// Announces through gossip that this node takes no new children.
    pub(crate) async fn announce_draining(&self) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(DRAINING_KEY, "1"))
            .await;
    }

    /// Stops gossiping.
    pub(crate) async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

/// Starts a thread running a single-threaded runtime until the returned sender drops.
fn gossip_thread() -> Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("gossip runtime: {e}"))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("processhub-gossip".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })
        .map_err(|e| format!("gossip thread: {e}"))?;
    Ok((handle, stop))
}

/// The live members (self included), the live nodes that announced their leaving, and
/// the members that drain.
fn live_members(
    me: NodeId,
    live: &std::collections::BTreeMap<ChitchatId, chitchat::NodeState>,
) -> Gossip {
    // One incarnation per address: the newest.
    let mut by_addr: HashMap<SocketAddr, NodeId> = HashMap::new();
    let mut leaving = Vec::new();
    let mut draining = Vec::new();
    for (id, state) in live {
        let Ok(addr) = id.node_id.parse::<SocketAddr>() else {
            continue;
        };
        let node = NodeId::new(addr, id.generation_id);
        if state.get(LEAVING_KEY).is_some() {
            leaving.push(node);
            continue;
        }
        if state.get(DRAINING_KEY).is_some() {
            draining.push(node);
        }
        let e = by_addr.entry(addr).or_insert(node);
        if node.incarnation() > e.incarnation() {
            *e = node;
        }
    }
    by_addr.insert(me.addr(), me);
    let mut members: Vec<NodeId> = by_addr.into_values().collect();
    members.sort();
    Gossip {
        members,
        leaving,
        draining,
    }
}
