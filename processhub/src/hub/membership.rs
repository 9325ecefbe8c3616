//! Membership and failure detection: chitchat (scuttlebutt gossip over UDP with a
//! phi-accrual failure detector), on the same port number as the hub's TCP listener.
//!
//! Chitchat's `cluster_id` is the hub id, so hubs of different ids never gossip with
//! each other even when seeded with each other's addresses; every datagram carries a
//! MAC with the cluster key and a counter (`net::gossip`), so a stranger can neither
//! join, nor speak for a member, nor replay what a member said. A node leaving gracefully
//! sets the `leaving` key (and tells its peers directly over TCP, which is faster).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::core::view::Gossip;
use crate::events::HubEvent;
use crate::net::auth::ClusterAuth;
use crate::net::gossip::AuthTransport;
use crate::node::NodeId;

const LEAVING_KEY: &str = "leaving";
const DRAINING_KEY: &str = "draining";

/// Gossip settings.
#[derive(Clone, Debug)]
pub(crate) struct GossipConfig {
    pub(crate) interval: Duration,
    pub(crate) phi_threshold: f64,
    /// The cluster key(s): every datagram is signed and checked (`net::gossip`).
    pub(crate) auth: Arc<ClusterAuth>,
    /// Where the events go (a stranger's gossip is reported).
    pub(crate) events: crate::hooks::Events,
}

/// A running chitchat instance, on a thread of its own.
///
/// Gossip runs on its own single-threaded runtime so that nothing the hub's runtime
/// does (a component method that computes for a second, a blocking hook, a burst of
/// moves) delays heartbeats: a node whose heartbeats stall is declared dead by the
/// others, and its children restarted elsewhere.
pub(crate) struct Chitchat {
    /// The running instance, and the sender whose drop stops its gossip thread.
    live: Option<(ChitchatHandle, tokio::sync::oneshot::Sender<()>)>,
    /// What it was started with (a rejoin starts it again as a new incarnation).
    hub_id: String,
    seeds: Vec<String>,
    gossip: GossipConfig,
    changes: mpsc::UnboundedSender<Gossip>,
}

impl std::fmt::Debug for Chitchat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Chitchat")
    }
}

/// The membership seam: what the hub needs of its membership layer. It reports the
/// live set on the channel it was started with (self included, with the nodes that
/// announced they leave or drain), and tells the others when this node leaves or
/// drains. Chitchat in production ([`Chitchat`]); a script in tests and the simulator
/// ([`MembershipScript`]).
pub(crate) trait Membership: Send + Sync + 'static {
    /// Announces that this node leaves.
    fn announce_leaving(&self) -> BoxFuture<'_, ()>;
    /// Announces that this node takes no new children.
    fn announce_draining(&self) -> BoxFuture<'_, ()>;
    /// Stops.
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()>;
    /// Goes on as `me`, a new incarnation (after this node was downed), with `seeds`
    /// besides those it started with.
    fn reincarnate(&mut self, me: NodeId, seeds: Vec<String>) -> BoxFuture<'_, ()>;
}

impl Membership for Chitchat {
    fn announce_leaving(&self) -> BoxFuture<'_, ()> {
        Box::pin(Chitchat::announce_leaving(self))
    }

    fn announce_draining(&self) -> BoxFuture<'_, ()> {
        Box::pin(Chitchat::announce_draining(self))
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(Chitchat::shutdown(*self))
    }

    fn reincarnate(&mut self, me: NodeId, seeds: Vec<String>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some((handle, stop)) = self.live.take() {
                let _ = handle.shutdown().await;
                drop(stop);
            }
            let mut all = self.seeds.clone();
            all.extend(seeds);
            all.sort();
            all.dedup();
            match Chitchat::run(me, &self.hub_id, all, &self.gossip, self.changes.clone()).await {
                Ok(live) => self.live = Some(live),
                Err(e) => tracing::error!(%me, "gossip did not start again after a rejoin: {e}"),
            }
        })
    }
}

impl Chitchat {
    /// Starts gossiping as `me` on `me.addr()` (UDP). Every change of the live set is sent
    /// on `changes`, self included, with the nodes that announced they are leaving.
    pub(crate) async fn start(
        me: NodeId,
        hub_id: &str,
        seeds: Vec<String>,
        gossip: &GossipConfig,
        changes: mpsc::UnboundedSender<Gossip>,
    ) -> Result<Self, String> {
        let live = Self::run(me, hub_id, seeds.clone(), gossip, changes.clone()).await?;
        Ok(Self {
            live: Some(live),
            hub_id: hub_id.to_string(),
            seeds,
            gossip: gossip.clone(),
            changes,
        })
    }

    async fn run(
        me: NodeId,
        hub_id: &str,
        seeds: Vec<String>,
        gossip: &GossipConfig,
        changes: mpsc::UnboundedSender<Gossip>,
    ) -> Result<(ChitchatHandle, tokio::sync::oneshot::Sender<()>), String> {
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
        let events = gossip.events.clone();
        let transport = AuthTransport::new(
            Arc::clone(&gossip.auth),
            hub_id,
            Arc::new(move |addr| {
                events.send(HubEvent::Unauthenticated {
                    addr,
                    dialed: false,
                });
            }),
        );
        let (runtime, stop) = gossip_thread()?;
        let handle = runtime
            .spawn(async move { spawn_chitchat(config, Vec::new(), &transport).await })
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
        Ok((handle, stop))
    }

    /// Announces this node's departure through gossip.
    pub(crate) async fn announce_leaving(&self) {
        if let Some((handle, _)) = &self.live {
            handle
                .with_chitchat(|c| c.self_node_state().set(LEAVING_KEY, "1"))
                .await;
        }
    }

    /// Announces through gossip that this node takes no new children.
    pub(crate) async fn announce_draining(&self) {
        if let Some((handle, _)) = &self.live {
            handle
                .with_chitchat(|c| c.self_node_state().set(DRAINING_KEY, "1"))
                .await;
        }
    }

    /// Stops gossiping.
    pub(crate) async fn shutdown(self) {
        if let Some((handle, _stop)) = self.live {
            let _ = handle.shutdown().await;
        }
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

/// Membership by script, for tests and the simulator: each node sees every live node
/// unless told otherwise ([`MembershipScript::set_view`]); a node that is killed is
/// gone for the others at once; goodbyes and drains are passed on as gossip would.
/// Cheap to clone: all clones are the same script.
#[derive(Clone, Default)]
pub(crate) struct MembershipScript {
    state: Arc<Mutex<ScriptState>>,
}

impl std::fmt::Debug for MembershipScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MembershipScript")
    }
}

#[derive(Default)]
struct ScriptState {
    nodes: BTreeMap<NodeId, Scripted>,
}

struct Scripted {
    changes: mpsc::UnboundedSender<Gossip>,
    alive: bool,
    leaving: bool,
    draining: bool,
    /// What it sees alive, when scripted (itself always).
    sees: Option<Vec<NodeId>>,
}

// Used by the tests, and by the simulator that runs many hubs in one world.
#[cfg_attr(not(any(test, feature = "sim")), allow(dead_code))]
impl MembershipScript {
    /// Adds `me`, alive; its views go to `changes`.
    pub(crate) fn register(
        &self,
        me: NodeId,
        changes: mpsc::UnboundedSender<Gossip>,
    ) -> ScriptedMember {
        let mut st = self.state.lock().unwrap();
        st.nodes.insert(
            me,
            Scripted {
                changes,
                alive: true,
                leaving: false,
                draining: false,
                sees: None,
            },
        );
        st.publish();
        ScriptedMember {
            script: self.clone(),
            me,
            changes: st.nodes[&me].changes.clone(),
        }
    }

    /// What `node` sees alive from now on (`None`: every live node), as a partition or a
    /// failure detector's mistake would have it.
    pub(crate) fn set_view(&self, node: NodeId, sees: Option<Vec<NodeId>>) {
        let mut st = self.state.lock().unwrap();
        if let Some(n) = st.nodes.get_mut(&node) {
            n.sees = sees;
        }
        st.publish();
    }

    fn update(&self, node: NodeId, change: impl FnOnce(&mut Scripted)) {
        let mut st = self.state.lock().unwrap();
        if let Some(n) = st.nodes.get_mut(&node) {
            change(n);
        }
        st.publish();
    }
}

impl ScriptState {
    /// Sends every live node what it sees now.
    fn publish(&mut self) {
        let live: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(id, _)| *id)
            .collect();
        for (me, n) in &self.nodes {
            if !n.alive {
                continue;
            }
            // A scripted view is what the node's failure detector would say: it may
            // still name a node that died a moment ago.
            let mut members: Vec<NodeId> = match &n.sees {
                Some(sees) => sees.clone(),
                None => live.clone(),
            };
            if !members.contains(me) {
                members.push(*me);
            }
            members.sort();
            let flagged = |f: fn(&Scripted) -> bool| -> Vec<NodeId> {
                members
                    .iter()
                    .copied()
                    .filter(|m| self.nodes.get(m).is_some_and(f))
                    .collect()
            };
            let gossip = Gossip {
                leaving: flagged(|s| s.leaving),
                draining: flagged(|s| s.draining),
                members: members.clone(),
            };
            let _ = n.changes.send(gossip);
        }
    }
}

/// One node's part of a [`MembershipScript`].
pub(crate) struct ScriptedMember {
    script: MembershipScript,
    me: NodeId,
    changes: mpsc::UnboundedSender<Gossip>,
}

impl Membership for ScriptedMember {
    fn announce_leaving(&self) -> BoxFuture<'_, ()> {
        self.script.update(self.me, |n| n.leaving = true);
        Box::pin(std::future::ready(()))
    }

    fn announce_draining(&self) -> BoxFuture<'_, ()> {
        self.script.update(self.me, |n| n.draining = true);
        Box::pin(std::future::ready(()))
    }

    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.script.update(self.me, |n| n.alive = false);
        Box::pin(std::future::ready(()))
    }

    fn reincarnate(&mut self, me: NodeId, _seeds: Vec<String>) -> BoxFuture<'_, ()> {
        // The old incarnation is dead for everyone; the new one sees what the old saw.
        let sees = {
            let mut st = self.script.state.lock().unwrap();
            let old = st.nodes.get_mut(&self.me);
            old.map(|n| {
                n.alive = false;
                n.sees.take()
            })
            .unwrap_or_default()
        };
        let member = self.script.register(me, self.changes.clone());
        if let Some(mut sees) = sees {
            sees.retain(|n| *n != self.me);
            self.script.set_view(me, Some(sees));
        }
        self.me = member.me;
        Box::pin(std::future::ready(()))
    }
}
