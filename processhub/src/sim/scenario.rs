//! Scenarios drawn from a seed: a cluster, a workload, faults at times the seed picks,
//! the heal, time to settle, then the checker.

use std::time::Duration;

use crate::sim::check::{check, Report};
use crate::sim::workload::Rng;
use crate::sim::{LinkFault, Sim, SimConfig, Workload};

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
    /// One node's frames to the others vanish for a while (it still hears them), then
    /// the link heals: the others take it for dead, it takes nobody for dead.
    OneWay,
    /// A link between two nodes gets slow for a while.
    Delay,
    /// Light loss on every link of a node for a while: lost frames are retransmitted
    /// (TCP), late, holding back the frames behind them.
    Drop,
    /// Frames on every link of a node cross twice for a while (the receiver drops the
    /// copies, as TCP does).
    Duplicate,
    /// Frames on every link of a node are held up and put back in order for a while.
    Reorder,
    /// Now and then a connection of a node is reset for a while: both directions close
    /// and what was in flight is lost.
    Reset,
    /// A node runs only now and then for a while (a starved CPU), under the failure
    /// detection time.
    Slow,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Crash,
        FaultKind::QuickRestart,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::OneWay,
        FaultKind::Delay,
        FaultKind::Drop,
        FaultKind::Duplicate,
        FaultKind::Reorder,
        FaultKind::Reset,
        FaultKind::Slow,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::QuickRestart => "quick-restart",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::OneWay => "one-way",
            FaultKind::Delay => "delay",
            FaultKind::Drop => "drop",
            FaultKind::Duplicate => "duplicate",
            FaultKind::Reorder => "reorder",
            FaultKind::Reset => "reset",
            FaultKind::Slow => "slow",
        }
    }

    /// The kind of a name, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kinds of a comma-separated list of names (`crash,drop`), or which name is
    /// not one.
    pub fn parse_list(names: &str) -> Result<Vec<Self>, String> {
        names
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                Self::parse(s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown fault {s:?}; the faults are {}", all.join(", "))
                })
            })
            .collect()
    }
}

/// The faults of every link in `active` together: the longest delay, the highest rates.
fn merged(active: &[ActiveLink], link: (usize, usize)) -> LinkFault {
    let mut out = LinkFault::default();
    for a in active.iter().filter(|a| a.links.contains(&link)) {
        let f = a.fault;
        out.delay = out.delay.max(f.delay);
        out.loss = out.loss.max(f.loss);
        out.duplicate = out.duplicate.max(f.duplicate);
        out.reorder = out.reorder.max(f.reorder);
        out.reset = out.reset.max(f.reset);
    }
    out
}

/// A link fault under way.
#[derive(Clone, Debug)]
struct ActiveLink {
    end: Duration,
    kind: FaultKind,
    links: Vec<(usize, usize)>,
    fault: LinkFault,
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
    /// Whether to record the hubs' events ([`Outcome::events`]).
    pub record_events: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            config: SimConfig::default(),
            workload: Workload::default(),
            duration: Duration::from_secs(4),
            faults: vec![FaultKind::Crash, FaultKind::Delay],
            stops: 2,
            record_events: false,
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// What the seed chose, a line each (faults, times, nodes). Times are simulated
    /// time since the simulation began, as in [`Outcome::events`].
    pub plan: Vec<String>,
    /// The checker's verdicts and the trace's fingerprint.
    pub report: Report,
    /// Calls made, and acknowledged.
    pub calls: (usize, usize),
    /// Of the writes to replicated counters from a node other than their primary's, how
    /// many were acknowledged by every standby's word (half a round trip before the
    /// primary's reply), and how many by the primary's reply, on every node of the run.
    pub writes_acknowledged: (u64, u64),
    /// The first broken invariant the history saw as a call ended, if any.
    pub first_violation: Option<crate::sim::Violation>,
    /// Every call made, with its times and its outcome.
    pub history: crate::sim::History,
    /// The hubs' events, one line each (`at <time> node <i>: <event>`), when the
    /// scenario asked for them.
    pub events: Vec<String>,
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
    /// The command that runs this scenario from `seed` again (for the scenarios the
    /// command line can make: a workload of half plain, half replicated counters).
    pub fn replay_command(&self, seed: u64) -> String {
        let faults: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        let ship = if self.workload.ship_calls {
            " --ship calls"
        } else {
            ""
        };
        format!(
            "cargo run --release --example sim -- --seed {seed} --nodes {} --components {} --duration {} --faults {}{ship}",
            self.config.nodes,
            self.workload.plain + self.workload.replicated,
            self.duration.as_secs(),
            faults.join(",")
        )
    }

    /// Runs the scenario from `seed`.
    pub fn run(&self, seed: u64) -> Outcome {
        let mut rng = Rng::new(seed);
        let mut sim = Sim::new(seed, self.config.clone());
        let log = self.record_events.then(|| sim.record_events());
        let n = self.config.nodes.max(1);
        let detection = self.config.detection;
        // Faults in the first two thirds, each over before the last third.
        let window = (self.duration * 2 / 3).as_millis().max(1) as u64;
        let mut planned: Vec<Planned> = self
            .faults
            .iter()
            .map(|kind| {
                let lasts = match kind {
                    FaultKind::Pause | FaultKind::Partition | FaultKind::OneWay => {
                        detection * 2 + Duration::from_millis(rng.below(500))
                    }
                    FaultKind::Delay
                    | FaultKind::Drop
                    | FaultKind::Duplicate
                    | FaultKind::Reorder
                    | FaultKind::Reset
                    | FaultKind::Slow => Duration::from_millis(300 + rng.below(1200)),
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
                "counters {} plain, {} replicated (replicas = 3, sync{})",
                self.workload.plain,
                self.workload.replicated,
                if self.workload.ship_calls {
                    ", ship = \"calls\""
                } else {
                    ""
                }
            ),
            format!(
                "clients {} per node, a write every {:?}",
                self.workload.clients_per_node, self.workload.interval
            ),
            format!("duration {:?}", self.duration),
        ];
        let history = self.workload.start(&mut sim);
        let start = sim.now();
        // (end of the fault, what ends it, the node it was on)
        let mut ends: Vec<(Duration, FaultKind, usize)> = Vec::new();
        let mut active: Vec<ActiveLink> = Vec::new();
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
                    plan.push(format!(
                        "at {:?}: {id} is stopped from node {node}",
                        start + t
                    ));
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
                        plan.push(format!("at {:?}: node {node} crashes", start + p.at));
                        ends.push((t + p.lasts, p.kind, node));
                    }
                    FaultKind::QuickRestart => {
                        sim.crash(node);
                        let fresh = sim.add_node();
                        plan.push(format!(
                            "at {:?}: node {node} crashes; node {fresh} joins at once",
                            start + p.at
                        ));
                    }
                    FaultKind::Pause => {
                        sim.pause(node, p.lasts);
                        plan.push(format!(
                            "at {:?}: node {node} pauses for {:?}",
                            start + p.at,
                            p.lasts
                        ));
                    }
                    FaultKind::Partition => {
                        let sides: Vec<usize> =
                            (0..sim.nodes()).map(|i| usize::from(i == node)).collect();
                        sim.partition(&sides);
                        plan.push(format!(
                            "at {:?}: node {node} is cut off from the others for {:?}",
                            start + p.at,
                            p.lasts
                        ));
                        ends.push((t + p.lasts, p.kind, node));
                    }
                    FaultKind::OneWay => {
                        let others: Vec<usize> = (0..sim.nodes()).filter(|i| *i != node).collect();
                        sim.cut_one_way(&[node], &others);
                        plan.push(format!(
                            "at {:?}: the frames of node {node} to the others vanish for {:?} (it still hears them)",
                            start + p.at,
                            p.lasts
                        ));
                        ends.push((t + p.lasts, p.kind, node));
                    }
                    FaultKind::Slow => {
                        let every = Duration::from_millis(10 + rng.below(90));
                        sim.slow(node, every);
                        plan.push(format!(
                            "at {:?}: node {node} runs only once every {every:?} for {:?}",
                            start + p.at,
                            p.lasts
                        ));
                        ends.push((t + p.lasts, p.kind, node));
                    }
                    kind => {
                        let other = up[p.other % up.len()];
                        let (links, fault, what) = match kind {
                            FaultKind::Delay => {
                                let delay = Duration::from_millis(5 + rng.below(45));
                                let fault = LinkFault {
                                    delay,
                                    ..LinkFault::default()
                                };
                                let what = format!(
                                    "the link from node {node} to node {other} is {delay:?} slower"
                                );
                                (vec![(node, other)], fault, what)
                            }
                            _ => {
                                let rate = |lo: u64, hi: u64, rng: &mut Rng| {
                                    (lo + rng.below(hi - lo + 1)) as u16
                                };
                                let mut fault = LinkFault::default();
                                let what = match kind {
                                    FaultKind::Drop => {
                                        fault.loss = rate(10, 50, &mut rng);
                                        format!("{}‰ of the frames are lost", fault.loss)
                                    }
                                    FaultKind::Duplicate => {
                                        fault.duplicate = rate(50, 300, &mut rng);
                                        format!("{}‰ of the frames cross twice", fault.duplicate)
                                    }
                                    FaultKind::Reorder => {
                                        fault.reorder = rate(100, 500, &mut rng);
                                        format!("{}‰ of the frames are held up", fault.reorder)
                                    }
                                    _ => {
                                        fault.reset = rate(2, 10, &mut rng);
                                        format!(
                                            "{}‰ of the frames reset their connection",
                                            fault.reset
                                        )
                                    }
                                };
                                let links = (0..sim.nodes())
                                    .filter(|o| *o != node)
                                    .flat_map(|o| [(node, o), (o, node)])
                                    .collect();
                                (
                                    links,
                                    fault,
                                    format!("on every link of node {node}, {what}"),
                                )
                            }
                        };
                        if links.iter().all(|(a, b)| a != b) {
                            plan.push(format!("at {:?}: {what} for {:?}", start + p.at, p.lasts));
                            active.push(ActiveLink {
                                end: t + p.lasts,
                                kind,
                                links: links.clone(),
                                fault,
                            });
                            for link in links {
                                sim.set_link(link.0, link.1, merged(&active, link));
                            }
                        }
                    }
                }
            }
            while let Some(i) = active.iter().position(|a| a.end <= t) {
                let gone = active.remove(i);
                for link in &gone.links {
                    sim.set_link(link.0, link.1, merged(&active, *link));
                }
                plan.push(format!(
                    "at {:?}: the {} heals",
                    start + gone.end,
                    gone.kind.name()
                ));
            }
            while let Some(i) = ends.iter().position(|(end, ..)| *end <= t) {
                let (end, kind, a) = ends.remove(i);
                match kind {
                    FaultKind::Slow => sim.slow(a, Duration::ZERO),
                    FaultKind::Crash => {
                        let fresh = sim.add_node();
                        plan.push(format!(
                            "at {:?}: node {fresh} joins in place of node {a}",
                            start + end
                        ));
                        continue;
                    }
                    _ => sim.heal_partition(),
                }
                plan.push(format!("at {:?}: the {} heals", start + end, kind.name()));
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
        let writes_acknowledged = (0..sim.nodes())
            .map(|i| sim.hub(i).inner.events.telemetry().writes_acknowledged())
            .fold((0, 0), |(s, p), (s1, p1)| (s + s1, p + p1));
        Outcome {
            plan,
            report,
            calls: (ops.len(), acked),
            writes_acknowledged,
            first_violation: history.violations().into_iter().next(),
            history: history.clone(),
            events: log
                .map(|log| {
                    let log = log.lock().unwrap();
                    log.iter()
                        .map(|(at, node, ev)| format!("at {at:?} node {node}: {ev:?}"))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}
