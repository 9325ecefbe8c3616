//! P3 taken apart: sequential local calls through a handle, or the same through a plain
//! kameo `ask`, in a process of their own (to count syscalls and context switches with
//! `perf stat`, or to profile, one side at a time).
//!
//! ```sh
//! cargo run --release --example p3_probe -- ours 200000
//! cargo run --release --example p3_probe -- kameo 200000
//! cargo run --release --example p3_probe -- ours 200000 divergence   # no lease
//! ```
//!
//! Prints the mean time per call. See BENCHMARKS.md, "P3 taken apart".

use kameo::actor::Spawn;
use processhub::prelude::*;
use processhub::PartitionTolerance;

/// The component called: a counter.
#[distributed]
#[derive(Default, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[distributed]
impl Counter {
    /// Adds `by`; the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

// The same work in a plain kameo actor: the baseline of P3.
#[path = "shared/plain.rs"]
mod plain;
use plain::{Add, PlainCounter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "ours".into());
    let n: usize = match args.next() {
        Some(v) => v.parse().map_err(|e| format!("calls: {v}: {e}"))?,
        None => 200_000,
    };
    let mut builder = Hub::builder("p3-probe");
    match args.next().as_deref() {
        None => {}
        Some("divergence") => builder = builder.partition_tolerance(PartitionTolerance::Divergence),
        Some(other) => return Err(format!("unknown option {other}: only `divergence`").into()),
    }
    let hub = builder.start().await?;
    let counter = Counter::start(&hub, "p3", Counter::default()).await?;
    let plain = PlainCounter::spawn(PlainCounter { n: 0 });
    let started = std::time::Instant::now();
    match which.as_str() {
        "ours" => {
            for _ in 0..n {
                counter.add(1).await?;
            }
        }
        "kameo" => {
            for _ in 0..n {
                plain.ask(Add(1)).await?;
            }
        }
        other => return Err(format!("unknown side {other}: `ours` or `kameo`").into()),
    }
    let per_call = started.elapsed().as_nanos() as f64 / n.max(1) as f64 / 1e3;
    println!("{which}: {per_call:.2} µs per call");
    hub.shutdown().await?;
    Ok(())
}
