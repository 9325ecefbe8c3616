//! Your own component in the simulator: a cluster from a seed, clients on every node
//! recording each call in a history, a crash, and the checks of the promise.
//!
//! ```sh
//! cargo run --release --example sim_own -- 7
//! ```
//!
//! `Tally` keeps three copies (`replicas = 3`), so a crash of its primary loses no
//! acknowledged write. Its write returns the new value, which is what the history's
//! checks need: no value acknowledged twice (one writer at a time), no write returning
//! less than a value acknowledged before it began (nothing lost). Exits with 1 if a
//! check fails.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use processhub::prelude::*;
use processhub::sim::{Sim, SimConfig};

/// A tally whose write returns the new value.
#[distributed(replicas = 3)]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    /// Adds `by`; the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

const TALLIES: usize = 10;

fn main() -> ExitCode {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut sim = Sim::new(
        seed,
        SimConfig {
            nodes: 3,
            ..SimConfig::default()
        },
    );
    let ids: Vec<String> = (0..TALLIES).map(|i| format!("tally-{i}")).collect();
    let hub = sim.hub(0).clone();
    let starting = ids.clone();
    sim.run_until(0, Duration::from_secs(5), async move {
        for id in starting {
            Tally::start(&hub, id, Tally::default())
                .await
                .expect("a start");
        }
    })
    .expect("the tallies start within 5 s");

    // A client on every node: one write after another, each recorded.
    let history = sim.history();
    for node in 0..sim.nodes() {
        let (hub, history, ids) = (sim.hub(node).clone(), history.clone(), ids.clone());
        sim.spawn(node, async move {
            let mut k = node;
            while !history.is_closed() {
                let id = ids[k % ids.len()].clone();
                k += 1;
                let epoch = hub.lookup(&id).map(|c| c.epoch);
                let call = history.invoke(node, node, &id, epoch);
                let outcome = Tally::handle(&hub, id).add(1).await;
                history.complete(call, outcome.map_err(|e| e.to_string()));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    sim.run_for(Duration::from_secs(1));
    println!("at {:?}: node 1 crashes", sim.now());
    sim.crash(1);
    sim.run_for(Duration::from_secs(2));
    history.close();
    sim.run_for(Duration::from_secs(1));

    // Every acknowledged write is in the final value.
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    for op in history.ops() {
        if let Some(Ok(_)) = op.outcome {
            *acked.entry(op.id).or_default() += 1;
        }
    }
    let hub = sim.hub(0).clone();
    let reading = ids.clone();
    let finals = sim
        .run_until(0, Duration::from_secs(5), async move {
            let mut out = Vec::new();
            for id in reading {
                out.push((id.clone(), Tally::handle(&hub, id).get().await));
            }
            out
        })
        .expect("the values are read within 5 s");
    let mut failed = false;
    for (id, value) in finals {
        let want = acked.get(&id).copied().unwrap_or(0);
        match value {
            Ok(v) if v >= want => {}
            other => {
                failed = true;
                println!("{id}: {want} writes acknowledged, the end value is {other:?}");
            }
        }
    }
    let violations = history.violations();
    for v in &violations {
        println!("{} at {:?}: {}", v.invariant, v.at, v.what);
    }
    let calls = history.ops();
    let ok = calls
        .iter()
        .filter(|o| matches!(o.outcome, Some(Ok(_))))
        .count();
    println!(
        "seed {seed}: {} calls, {ok} acknowledged, {} violations",
        calls.len(),
        violations.len()
    );
    if failed || !violations.is_empty() {
        ExitCode::from(1)
    } else {
        println!("every acknowledged write kept, one writer at a time");
        ExitCode::SUCCESS
    }
}
