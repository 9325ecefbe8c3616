//! Scenarios drawn from a seed: a cluster, a workload, faults at times the seed picks,
//! the heal, time to settle, then the checker.

use std::time::Duration;

use crate::sim::check::{check, Report};
use crate::sim::workload::Rng;
use crate::sim::{Sim, SimConfig, Workload};

/// A kind of fault a scenario may draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// A node crashes; a fresh node takes its place after a while (a supervisor
    /// restarting the process), once the others have taken over.
    Crash,
    /// A node crashes and a fresh node joins at once, before the others restarted the
    /// crashed node's children.
    QuickRestart,
    /// A node stops for a while (longer than failure detection), then resumes.
    Pause,
    /// The cluster splits in two for a while, then heals.
    Partition,
    /// A link between two nodes gets slow for a while.
    Delay,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Crash,
        FaultKind::QuickRestart,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Delay,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::QuickRestart => "quick-restart",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Delay => "delay",
        }
    }

    /// The kind of a name, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A scenario: what the seed draws from.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The cluster.
    pub config: SimConfig,
    /// The counters and clients.
    pub workload: Workload,
    /// Simulated time with the workload running, faults included.
    pub duration: Duration,
    /// The kinds of fault drawn (each once, at a time the seed picks).
    pub faults: Vec<FaultKind>,
    /// Counters stopped half way through (drawn from the seed; their clients go on
    /// calling them, and must be told they are gone).
    pub stops: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            config: SimConfig::default(),
            workload: Workload::default(),
            duration: Duration::from_secs(4),
            faults: vec![FaultKind::Crash, FaultKind::Delay],
            stops: 2,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What the seed chose, a line each (faults, times, nodes).
    pub plan: Vec<String>,
    /// The checker's verdicts and the trace's fingerprint.
    pub report: Report,
    /// Calls made, and acknowledged.
    pub calls: (usize, usize),
}

/// One planned fault: what, at what time of the run, on which nodes, for how long.
#[derive(Clone, Debug)]
struct Planned {
    kind: FaultKind,
    at: Duration,
    node: usize,
    other: usize,
    lasts: Duration,
}

impl Scenario {
    /// Runs the scenario from `seed`.
    pub fn run(&self, seed: u64) -> Outcome {
        let mut rng = Rng::new(seed);
        let mut sim = Sim::new(seed, self.config.clone());
        let n = self.config.nodes.max(1);
        let detection = self.config.detection;
        // Faults in the first two thirds, each over before the last third.
        let window = (self.duration * 2 / 3).as_millis().max(1) as u64;
        let mut planned: Vec<Planned> = self
            .faults
            .iter()
            .map(|kind| {
                let lasts = match kind {
                    FaultKind::Pause | FaultKind::Partition => {
                        detection * 2 + Duration::from_millis(rng.below(500))
                    }
                    FaultKind::Delay => Duration::from_millis(200 + rng.below(800)),
                    // The restart comes once the others have taken over.
                    FaultKind::Crash => detection * 3 + Duration::from_millis(rng.below(500)),
                    FaultKind::QuickRestart => Duration::ZERO,
                };
                let latest = window.saturating_sub(lasts.as_millis() as u64).max(1);
                Planned {
                    kind: *kind,
                    at: Duration::from_millis(rng.below(latest)),
                    node: rng.below(n as u64) as usize,
                    other: rng.below(n as u64) as usize,
                    lasts,
                }
            })
            .collect();
        planned.sort_by_key(|p| (p.at, p.kind));
        let mut plan = vec![
            format!("nodes {n}"),
            format!(
                "counters {} plain, {} replicated (replicas = 3, sync)",
                self.workload.plain, self.workload.replicated
            ),
            format!(
                "clients {} per node, a write every {:?}",
                self.workload.clients_per_node, self.workload.interval
            ),
            format!("duration {:?}", self.duration),
        ];
        let history = self.workload.start(&mut sim);
        let start = sim.now();
        // (end of the fault, what ends it, and the nodes it was between)
        let mut ends: Vec<(Duration, FaultKind, usize, usize)> = Vec::new();
        let mut next = 0;
        let mut stops_due = self.stops > 0;
        while sim.now() < start + self.duration {
            let t = sim.now() - start;
            if stops_due && t >= self.duration / 2 {
                stops_due = false;
                let (plain, replicated) = self.workload.ids();
                let all: Vec<String> = plain.into_iter().chain(replicated).collect();
                let up = sim.up();
                for _ in 0..self.stops.min(all.len()) {
                    let id = &all[rng.below(all.len() as u64) as usize];
                    let node = up[rng.below(up.len() as u64) as usize];
                    self.workload.stop(&sim, node, id, &history);
                    plan.push(format!("at {t:?}: {id} is stopped from node {node}"));
                }
            }
            while next < planned.len() && planned[next].at <= t {
                let p = planned[next].clone();
                next += 1;
                let up = sim.up();
                let node = up[p.node % up.len()];
                match p.kind {
                    FaultKind::Crash => {
                        sim.crash(node);
                        plan.push(format!("at {:?}: node {node} crashes", p.at));
                        ends.push((t + p.lasts, p.kind, node, node));
                    }
                    FaultKind::QuickRestart => {
                        sim.crash(node);
                        let fresh = sim.add_node();
                        plan.push(format!(
                            "at {:?}: node {node} crashes; node {fresh} joins at once",
                            p.at
                        ));
                    }
                    FaultKind::Pause => {
                        sim.pause(node, p.lasts);
                        plan.push(format!(
                            "at {:?}: node {node} pauses for {:?}",
                            p.at, p.lasts
                        ));
                    }
                    FaultKind::Partition => {
                        let sides: Vec<usize> =
                            (0..sim.nodes()).map(|i| usize::from(i == node)).collect();
                        sim.partition(&sides);
                        plan.push(format!(
                            "at {:?}: node {node} is cut off from the others for {:?}",
                            p.at, p.lasts
                        ));
                        ends.push((t + p.lasts, p.kind, node, node));
                    }
                    FaultKind::Delay => {
                        let other = up[p.other % up.len()];
                        let delay = Duration::from_millis(5 + rng.below(45));
                        if other != node {
                            sim.set_link(node, other, delay);
                            plan.push(format!(
                                "at {:?}: the link from node {node} to node {other} is {delay:?} slower for {:?}",
                                p.at, p.lasts
                            ));
                            ends.push((t + p.lasts, p.kind, node, other));
                        }
                    }
                }
            }
            while let Some(i) = ends.iter().position(|(end, ..)| *end <= t) {
                let (end, kind, a, b) = ends.remove(i);
                match kind {
                    FaultKind::Delay => sim.set_link(a, b, Duration::ZERO),
                    FaultKind::Crash => {
                        let fresh = sim.add_node();
                        plan.push(format!(
                            "at {end:?}: node {fresh} joins in place of node {a}"
                        ));
                        continue;
                    }
                    _ => sim.heal(),
                }
                plan.push(format!("at {end:?}: the {} heals", kind.name()));
            }
            sim.step();
        }
        sim.heal();
        // Time to converge after the last fault.
        sim.run_for(detection * 4);
        let report = check(&mut sim, &self.workload, &history);
        let ops = history.ops();
        let acked = ops
            .iter()
            .filter(|o| matches!(o.outcome, Some(Ok(_))))
            .count();
        Outcome {
            plan,
            report,
            calls: (ops.len(), acked),
        }
    }
}
