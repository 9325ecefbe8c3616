//! The simulator at scale: N nodes and C components on simulated time; a join, a
//! graceful leave and a crash, each with the simulated time the cluster took to
//! converge, the wall time, and the frames and bytes the nodes sent for it.
//!
//! ```sh
//! cargo run --release --example sim_scale -- 100 100000
//! ```

use std::time::{Duration, Instant};

use processhub::sim::{Sim, SimConfig, Workload};

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let components: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let wall = Instant::now();
    let mut sim = Sim::new(
        1,
        SimConfig {
            nodes,
            ..SimConfig::default()
        },
    );
    let workload = Workload {
        plain: components,
        replicated: 0,
        ship_calls: false,
        clients_per_node: 0,
        interval: Duration::from_millis(20),
    };
    let _history = workload.start(&mut sim);
    let started = wall.elapsed();
    converge(&mut sim, components);
    println!(
        "{nodes} nodes, {components} components: started in {:?} of wall time",
        started
    );
    println!("| change | simulated time to converge | wall time | between the other nodes: frames / bytes per node (mean / max) | to and from the changed node: frames / bytes |");
    println!("|---|---|---|---|---|");
    measure(&mut sim, components, "a node joins", |sim| sim.add_node());
    measure(&mut sim, components, "a node leaves gracefully", |sim| {
        let leaver = sim.up()[1];
        sim.shutdown(leaver);
        leaver
    });
    measure(&mut sim, components, "a node crashes", |sim| {
        let victim = sim.up()[1];
        sim.crash(victim);
        victim
    });
    println!("total wall time {:?}", wall.elapsed());
}

/// Frames and bytes sent so far over each link, `[from][to]`.
fn traffic(sim: &Sim) -> Vec<Vec<(u64, u64)>> {
    (0..sim.nodes())
        .map(|a| (0..sim.nodes()).map(|b| sim.sent_to(a, b)).collect())
        .collect()
}

/// Runs until every component runs on a running node, counted once, with the
/// registries of a few nodes agreeing on a sample of ids; the simulated time it took.
fn converge(sim: &mut Sim, components: usize) -> Duration {
    let start = sim.now();
    let sample: Vec<String> = (0..components)
        .step_by((components / 16).max(1))
        .map(|i| format!("p-{i}"))
        .collect();
    loop {
        sim.run_for(Duration::from_millis(10));
        let up = sim.up();
        let running: usize = up.iter().map(|i| sim.hub(*i).local_children()).sum();
        let alive: Vec<_> = up.iter().map(|i| sim.hub(*i).node_id()).collect();
        let agreed = sample.iter().all(|id| {
            let first = sim
                .hub(up[0])
                .lookup(id)
                .map(|c| (c.owner, c.epoch, c.pending));
            first.is_some_and(|(owner, _, pending)| !pending && alive.contains(&owner))
                && up.iter().take(4).all(|i| {
                    sim.hub(*i)
                        .lookup(id)
                        .map(|c| (c.owner, c.epoch, c.pending))
                        == first
                })
        });
        if running == components && agreed {
            return sim.now() - start;
        }
        if sim.now() - start > Duration::from_secs(120) {
            println!(
                "did not converge in 120 s of simulated time ({running} of {components} running)"
            );
            return sim.now() - start;
        }
    }
}

/// Makes a change (it returns the node it changed), waits for the cluster to converge,
/// and prints a row: the traffic between the other nodes (what sync costs the members
/// that stay) apart from the traffic to and from the changed node (the hand-overs).
fn measure(sim: &mut Sim, components: usize, what: &str, change: impl FnOnce(&mut Sim) -> usize) {
    let before = traffic(sim);
    let wall = Instant::now();
    let changed = change(sim);
    let took = converge(sim, components);
    let after = traffic(sim);
    let delta = |a: usize, b: usize| {
        let was = before
            .get(a)
            .and_then(|row| row.get(b))
            .copied()
            .unwrap_or_default();
        (after[a][b].0 - was.0, after[a][b].1 - was.1)
    };
    let n = after.len();
    let others: Vec<usize> = (0..n).filter(|i| *i != changed).collect();
    let per_node: Vec<(u64, u64)> = others
        .iter()
        .map(|a| {
            others
                .iter()
                .filter(|b| *b != a)
                .map(|b| delta(*a, *b))
                .fold((0, 0), |s, d| (s.0 + d.0, s.1 + d.1))
        })
        .collect();
    let m = per_node.len().max(1) as u64;
    let (frames, bytes) = per_node.iter().fold((0, 0), |s, d| (s.0 + d.0, s.1 + d.1));
    let max_f = per_node.iter().map(|d| d.0).max().unwrap_or(0);
    let max_b = per_node.iter().map(|d| d.1).max().unwrap_or(0);
    let (cf, cb) = (0..n)
        .filter(|o| *o != changed)
        .map(|o| {
            let (out, back) = (delta(changed, o), delta(o, changed));
            (out.0 + back.0, out.1 + back.1)
        })
        .fold((0, 0), |s, d| (s.0 + d.0, s.1 + d.1));
    println!(
        "| {what} | {took:?} | {:?} | {} / {max_f} frames, {} / {max_b} bytes | {cf} frames, {cb} bytes |",
        wall.elapsed(),
        frames / m,
        bytes / m
    );
}
