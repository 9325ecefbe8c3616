//! The checker: the promise, verified on a run's history and its final state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::sim::workload::SimCounter;
use crate::sim::{History, Sim, Workload};

/// What one invariant says of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It holds.
    Pass,
    /// It does not: what broke it.
    Fail(String),
}

/// One invariant and its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Its name: `single-writer`, `no-lost-write`, `convergence`, `no-resurrection`,
    /// `standbys`.
    pub name: &'static str,
    /// What it says.
    pub verdict: Verdict,
}

/// The verdicts of a run, and the fingerprint of its trace (the same seed and options
/// give the same fingerprint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One per invariant.
    pub checks: Vec<Check>,
    /// A hash of the history, the final values and every registry.
    pub trace: u64,
}

impl Report {
    /// Whether every invariant holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict == Verdict::Pass)
    }
}

/// FNV-1a: a fingerprint of the trace (not for security; stable across runs).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn verdict(failures: Vec<String>) -> Verdict {
    if failures.is_empty() {
        Verdict::Pass
    } else {
        let more = failures.len().saturating_sub(5);
        let mut s = failures.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        Verdict::Fail(s)
    }
}

/// Checks a run: (a) single writer: the acknowledged values of each counter are
/// distinct (but for counters restarted from their start state by design), checked by
/// the history as each call ends; (b) no acknowledged write lost: no write returns less
/// than a value acknowledged before it was invoked (checked as each call ends), each
/// counter ends at no less than its largest acknowledged value nor than its number of
/// acknowledged writes, and at no more than its writes made (none applied twice),
/// except plain counters of a node that crashed (restarted from their start state by
/// design); (c) convergence: every running hub's registry agrees on each counter, none
/// pending, each owned by a running node; (d) no resurrection: no call made after a
/// counter's stop was acknowledged succeeds, and no registry holds it at the end; (e)
/// standbys: each replicated counter has as
/// many standbys as the running nodes allow. Reads the final values through the first
/// running node, after closing the history.
pub fn check(sim: &mut Sim, workload: &Workload, history: &History) -> Report {
    // The clients stop; the calls under way end (or their node is gone).
    history.close();
    let settle = sim.now() + sim.config.call_timeout * 2;
    while !history.settled() && sim.now() < settle {
        sim.step();
    }
    let ops = history.ops();
    let (plain, replicated) = workload.ids();
    let mut acked: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut made: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &ops {
        *made.entry(&op.id).or_default() += 1;
        if let Some(Ok(v)) = &op.outcome {
            acked.entry(&op.id).or_default().push(*v);
        }
    }
    // (a) and the first half of (b), as the history saw them when each call ended.
    let seen = |invariant: &str| -> Vec<String> {
        history
            .violations()
            .into_iter()
            .filter(|v| v.invariant == invariant)
            .map(|v| format!("at {:?}: {}", v.at, v.what))
            .collect()
    };
    let twice = seen("single-writer");
    // Final values, read through a running node.
    let up = sim.up();
    let reader = sim.hub(up[0]).clone();
    let stops = history.stops();
    // A stop asked for and not acknowledged may have happened: such a counter need not
    // be there at the end.
    let asked = history.stops_asked();
    let stopped = |id: &str| asked.iter().any(|s| s == id);
    let ids: Vec<(String, bool)> = plain
        .iter()
        .map(|id| (id.clone(), false))
        .chain(replicated.iter().map(|id| (id.clone(), true)))
        .filter(|(id, _)| !stopped(id))
        .collect();
    let read_ids = ids.clone();
    let kind = workload.replicated_type();
    let finals = sim
        .run_until(up[0], Duration::from_secs(30), async move {
            let mut out = Vec::new();
            for (id, replicated) in read_ids {
                let v = if replicated {
                    kind.get(&reader, id.clone()).await
                } else {
                    SimCounter::handle(&reader, id.clone()).get().await
                };
                out.push((id, v.map_err(|e| e.to_string())));
            }
            out
        })
        .unwrap_or_default();
    // (b)
    let mut lost = seen("no-lost-write");
    for (id, value) in &finals {
        let excused = sim.is_excused(id);
        match value {
            Err(e) => lost.push(format!("{id}: unreadable at the end ({e})")),
            Ok(v) => {
                let acks = acked.get(id.as_str()).map_or(&[][..], |a| &a[..]);
                let max = acks.iter().max().copied();
                if let Some(max) = max.filter(|m| v < m && !excused) {
                    lost.push(format!("{id}: ends at {v}, {max} was acknowledged"));
                } else if (*v as usize) < acks.len() && !excused {
                    // Each acknowledged write added one: fewer means some were lost.
                    lost.push(format!(
                        "{id}: ends at {v} after {} acknowledged writes",
                        acks.len()
                    ));
                }
                let writes = made.get(id.as_str()).copied().unwrap_or(0);
                if *v > writes {
                    lost.push(format!("{id}: ends at {v} after {writes} writes"));
                }
            }
        }
    }
    if finals.len() != ids.len() {
        lost.push("the final values could not be read".to_string());
    }
    // (c) and (e)
    let hubs: Vec<_> = up.iter().map(|i| sim.hub(*i).clone()).collect();
    let alive: BTreeSet<_> = hubs.iter().map(|h| h.node_id()).collect();
    let mut diverged = Vec::new();
    let mut standbys = Vec::new();
    for (id, replicated) in &ids {
        let infos: Vec<_> = hubs.iter().map(|h| h.lookup(id)).collect();
        let first = infos[0].as_ref().map(|i| (i.owner, i.epoch, i.pending));
        if infos
            .iter()
            .any(|i| i.as_ref().map(|i| (i.owner, i.epoch, i.pending)) != first)
        {
            let views: Vec<String> = up
                .iter()
                .zip(&infos)
                .map(|(i, info)| match info {
                    Some(c) => {
                        let owner = up.iter().find(|j| sim.hub(**j).node_id() == c.owner);
                        format!(
                            "node {i}: node {owner:?} at epoch {}{}",
                            c.epoch,
                            if c.pending { " (pending)" } else { "" }
                        )
                    }
                    None => format!("node {i}: none"),
                })
                .collect();
            diverged.push(format!(
                "{id}: the registries differ ({})",
                views.join(", ")
            ));
        }
        match &infos[0] {
            None => diverged.push(format!("{id}: in no registry")),
            Some(i) if i.pending => diverged.push(format!("{id}: still pending")),
            Some(i) if !alive.contains(&i.owner) => {
                diverged.push(format!("{id}: owned by {}, which is gone", i.owner))
            }
            Some(i) if *replicated => {
                let want = alive.len().min(3) - 1;
                if i.standbys.len() != want {
                    standbys.push(format!(
                        "{id}: {} standbys, {want} expected",
                        i.standbys.len()
                    ));
                }
            }
            Some(_) => {}
        }
    }
    // (d): the calls as the history saw them end, then the registries.
    let mut resurrected = seen("no-resurrection");
    for (id, _) in &stops {
        let holders: Vec<String> = up
            .iter()
            .filter_map(|i| {
                sim.hub(*i).lookup(id).map(|c| {
                    let owner = up.iter().find(|j| sim.hub(**j).node_id() == c.owner);
                    format!(
                        "node {i} says node {owner:?} owns it at epoch {}{}",
                        c.epoch,
                        if c.pending { ", pending" } else { "" }
                    )
                })
            })
            .collect();
        if !holders.is_empty() {
            resurrected.push(format!(
                "{id}: in a registry after its stop ({})",
                holders.join(", ")
            ));
        }
    }
    let mut fnv = Fnv::new();
    for op in &ops {
        fnv.write(
            format!(
                "{}|{}|{}|{}|{:?};",
                op.seq, op.client, op.node, op.id, op.outcome
            )
            .as_bytes(),
        );
    }
    for (id, v) in &finals {
        fnv.write(format!("{id}={v:?};").as_bytes());
    }
    for h in &hubs {
        let mut children = h.children();
        children.sort_by(|a, b| a.id.cmp(&b.id));
        for c in children {
            fnv.write(format!("{}@{}#{}{:?};", c.id, c.owner, c.epoch, c.standbys).as_bytes());
        }
    }
    Report {
        checks: vec![
            Check {
                name: "single-writer",
                verdict: verdict(twice),
            },
            Check {
                name: "no-lost-write",
                verdict: verdict(lost),
            },
            Check {
                name: "convergence",
                verdict: verdict(diverged),
            },
            Check {
                name: "no-resurrection",
                verdict: verdict(resurrected),
            },
            Check {
                name: "standbys",
                verdict: verdict(standbys),
            },
        ],
        trace: fnv.0,
    }
}
