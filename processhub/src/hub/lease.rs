//! Renewing this node's lease, and rejoining after it was downed.
//!
//! The renewer asks every member at once (`Request::Lease`); the answers of a quorum
//! (the engine counts it, this node included) make the lease valid for one lease period
//! from the moment it asked. It renews when a call finds the lease run out, ahead of
//! time while calls use it, after this process was paused, when an unreachable member
//! is heard again, and every quarter lease after a renewal found no quorum, until one
//! does or a refusal tells the node it was downed; an idle cluster sends nothing. A refusal means a quorum is
//! downing this node: it rejoins.
//!
//! Rejoining: the superseded children stop without a word to anyone (the others already
//! run them under higher epochs), standby copies go, and the node comes back as a new
//! incarnation at the same address with an empty registry, which the members' snapshots
//! fill, as for a node that just started.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::HubInner;
use crate::events::HubEvent;
use crate::net::wire::{LeaseAsk, Request, Response};

/// How long a renewal waits for the connection to a member.
const CONNECT_WAIT: Duration = Duration::from_millis(50);

/// Renews the lease while the hub runs (nothing to do when the strategy does not fence).
pub(super) async fn lease_loop(hub: Weak<HubInner>) {
    loop {
        // (The lease of the current life: a rejoin replaces it, and wakes this loop.)
        let Some(lease) = hub.upgrade().map(|h| h.lease()) else {
            return;
        };
        if !lease.fences() {
            return;
        }
        let period = lease.config.lease;
        tokio::select! {
            // In a fixed order, as the shell's other selects (a simulated run replays
            // from its seed): a call's ask first when both are in.
            biased;
            _ = lease.wanted() => {}
            _ = tokio::time::sleep(period / 4) => {
                // Again after a renewal that found no quorum: a node cut off, or
                // downed by members it no longer trusts, learns which once they answer,
                // whether or not calls come (a doubted member's word that this node was
                // downed counts only in its refusal). Else ahead of time, while calls
                // use it.
                let due = lease.failed()
                    || (lease.remaining() <= period * 2 / 3 && lease.take_used());
                if !due {
                    continue;
                }
            }
        }
        let Some(hub) = hub.upgrade() else { return };
        if hub.is_stopped() {
            return;
        }
        hub.renew_lease().await;
    }
}

impl HubInner {
    /// One renewal: asks every member, counts the grants; a refusal supersedes this node.
    pub(super) async fn renew_lease(self: &Arc<Self>) {
        let asked = Instant::now();
        let lease = self.lease();
        let me = self.me();
        let (needed, peers) = {
            let e = self.engine.read().unwrap();
            if e.is_superseded() {
                return;
            }
            e.lease_quorum()
        };
        let mut granted = 1;
        if granted >= needed {
            lease.renewed(asked);
            return;
        }
        let deadline = asked + lease.config.lease / 2;
        let mut asks: FuturesUnordered<_> = peers
            .iter()
            .map(|peer| {
                let t = &self.transport;
                async move {
                    let req = Request::Lease(LeaseAsk {});
                    (
                        *peer,
                        t.request_within(*peer, req, CONNECT_WAIT, deadline).await,
                    )
                }
            })
            .collect();
        let mut refused = None;
        while let Some((peer, answer)) = asks.next().await {
            match answer {
                Ok(Response::Lease { granted: true }) => {
                    granted += 1;
                    if granted == needed {
                        lease.renewed(asked);
                    }
                }
                Ok(Response::Lease { granted: false }) => refused = Some(peer),
                _ => {}
            }
        }
        drop(asks);
        if self.me() != me {
            // It rejoined meanwhile: the answers were about its previous life.
            return;
        }
        if let (Some(peer), true) = (refused, granted < needed) {
            // Refused, and no quorum granted it: a quorum is downing this node.
            tracing::warn!(me = %self.me(), %peer, "members refused this node's lease: it was downed");
            self.decide(|e| e.superseded());
        } else if granted < needed {
            tracing::debug!(me = %self.me(), granted, needed, "no quorum confirmed the lease");
            lease.refused();
        }
    }

    /// After this node was downed: rejoins, in a task of its own.
    pub(super) fn spawn_rejoin(self: Arc<Self>) {
        tokio::spawn(async move { self.rejoin().await });
    }

    /// Drops what this node ran (superseded: the others run it under higher epochs),
    /// and comes back as a new incarnation.
    async fn rejoin(self: Arc<Self>) {
        if self.is_stopped() {
            return;
        }
        let old = self.me();
        let ((children, copies), seeds) = {
            let mut e = self.engine.write().unwrap();
            let seeds: Vec<String> = e
                .view
                .members()
                .iter()
                .filter(|n| **n != old)
                .map(|n| n.addr().to_string())
                .collect();
            (e.take_for_rejoin(), seeds)
        };
        let dropped = children.len();
        // What it ran is superseded; what its replicated children held is kept aside
        // (salvage), in case every other copy of one is gone too.
        let expected: Vec<(Arc<str>, u64)> = children
            .iter()
            .filter(|c| c.salvage)
            .map(|c| (Arc::clone(&c.id), c.epoch))
            .collect();
        let taking = self.salvage_children(children);
        // Higher than the old one: the newest incarnation at an address is the live one.
        let new = (self.new_incarnation)().max(old.incarnation() + 1);
        self.incarnation.store(new, Ordering::Release);
        let me = self.me();
        self.transport.reincarnate(me);
        {
            let mut e = self.engine.write().unwrap();
            let safety = e.downing.config;
            let mut fresh = crate::core::engine::Engine::new(
                me,
                crate::child::types::type_info,
                crate::child::types::any_replicated(),
                safety,
                Instant::now().into_std(),
            );
            // The cluster it comes back to is as large as the one it left: no quorum of
            // its own until it hears the others.
            fresh.downing.inherit(&e.downing);
            fresh.set_rejoined();
            for (id, copy) in copies {
                fresh.keep_salvage(&id, copy);
            }
            fresh.expect_salvage(expected);
            *e = fresh;
        }
        if let Some(m) = self.membership.lock().await.as_mut() {
            m.reincarnate(me, seeds).await;
        }
        let old_lease = {
            let mut l = self.lease.write().unwrap();
            let fresh = Arc::new(crate::child::lease::Lease::new(l.config));
            std::mem::replace(&mut *l, fresh)
        };
        // The old life's instances keep the old lease, revoked: none of them answers
        // again. The renewer, waiting on it, moves to the new one.
        old_lease.revoke();
        old_lease.ask();
        tracing::warn!(%old, new = %me, dropped, "rejoined as a new incarnation");
        self.events.send(HubEvent::Rejoined {
            old,
            new: me,
            dropped,
        });
        // The states of its former primaries, once their instances gave them up (they
        // were offered from the first connection on; a restart or a fetch of one waits
        // for them).
        let taken = taking.await;
        self.decide(|e| e.salvage_taken(taken));
    }
}
