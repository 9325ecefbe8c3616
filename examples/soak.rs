//! A soak of the simulator: many seeds of one fault mix, on every core, each failing
//! seed printed with the command that replays it. Not for CI (thousands of seeds take
//! minutes); CI runs about a hundred in `tests/sim.rs`.
//!
//! ```sh
//! cargo run --release --example soak -- --seeds 0..2000 --faults crash,drop,duplicate,reorder,reset,delay,slow
//! ```
//!
//! Options: `--seeds A..B` (default `0..1000`), `--faults a,b,...` (the kinds of
//! `processhub::sim::FaultKind`; default `crash,drop,duplicate,reorder,reset,delay`),
//! `--nodes N` (3), `--components C` (40), `--duration SECS` (4), `--threads T` (the
//! cores). Exits with 1 if any seed failed, 2 on bad options.

use std::ops::Range;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use processhub::sim::{FaultKind, Scenario, Verdict};

#[path = "shared/options.rs"]
mod options;
use options::{number, ScenarioOptions};

const USAGE: &str =
    "usage: soak [--seeds A..B] [--faults a,b,...] [--ship state|calls] [--nodes N] \
                     [--components C] [--duration SECS] [--threads T]";

struct Options {
    seeds: Range<u64>,
    scenario: Scenario,
    threads: usize,
}

fn parse() -> Result<Options, String> {
    let mut seeds = 0..1000;
    let mut opts = ScenarioOptions::new(Scenario {
        faults: vec![
            FaultKind::Crash,
            FaultKind::Drop,
            FaultKind::Duplicate,
            FaultKind::Reorder,
            FaultKind::Reset,
            FaultKind::Delay,
        ],
        ..Scenario::default()
    });
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value; {USAGE}"))
        };
        if opts.take(&arg, &mut value)? {
            continue;
        }
        match arg.as_str() {
            "--seeds" => {
                let v = value()?;
                let (a, b) = v
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds takes A..B, not {v:?}"))?;
                seeds = number(a, "--seeds")?..number(b, "--seeds")?;
                if seeds.is_empty() {
                    return Err(format!("--seeds {v}: no seed in that range"));
                }
            }
            "--threads" => threads = (number(&value()?, "--threads")? as usize).max(1),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}; {USAGE}")),
        }
    }
    Ok(Options {
        seeds,
        scenario: opts.finish(),
        threads,
    })
}

fn main() -> ExitCode {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let faults: Vec<&str> = opts.scenario.faults.iter().map(|f| f.name()).collect();
    let wall = Instant::now();
    let next = AtomicU64::new(opts.seeds.start);
    let failed: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let calls = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for _ in 0..opts.threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= opts.seeds.end {
                    return;
                }
                let out = opts.scenario.run(seed);
                calls.fetch_add(out.calls.1 as u64, Ordering::Relaxed);
                if !out.report.passed() {
                    let why: Vec<String> = out
                        .report
                        .checks
                        .iter()
                        .filter_map(|c| match &c.verdict {
                            Verdict::Pass => None,
                            Verdict::Fail(why) => Some(format!("{}: {why}", c.name)),
                        })
                        .collect();
                    let line = why.join(" | ");
                    println!(
                        "seed {seed} FAILED: {line}\n  replay: {}",
                        opts.scenario.replay_command(seed)
                    );
                    failed.lock().unwrap().push((seed, line));
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    let total = opts.seeds.end - opts.seeds.start;
    println!(
        "{} of {total} seeds failed ({} acknowledged calls checked) in {:?} of wall time, faults {}",
        failed.len(),
        calls.load(Ordering::Relaxed),
        wall.elapsed(),
        faults.join(",")
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
