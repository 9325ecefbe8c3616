//! The simulator from the command line: a cluster on simulated time, faults drawn from a
//! seed, the checker's verdict on every promise, and the fingerprint of the run.
//!
//! ```sh
//! cargo run --release --example sim -- --seed 7 --nodes 3 --components 40 --duration 4 --faults crash,pause
//! ```
//!
//! Prints the options the seed drew (faults, times, nodes), one line per invariant with
//! its verdict, and last `trace <hex>`; exits with 1 on any violation, 2 on bad options.
//! The same seed and options give the same output: a failing seed is replayed with the
//! same command.

use std::process::ExitCode;
use std::time::Duration;

use processhub::sim::{FaultKind, Scenario, SimConfig, Verdict, Workload};

const USAGE: &str = "usage: sim [--seed S] [--nodes N] [--components C] [--duration SECS] \
                     [--faults crash,quick-restart,pause,partition,delay]";

fn parse() -> Result<(u64, Scenario), String> {
    let mut seed = 1;
    let mut scenario = Scenario::default();
    let mut components = 40;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{arg} needs a value; {USAGE}"))
        };
        match arg.as_str() {
            "--seed" => seed = number(&value()?, "--seed")?,
            "--nodes" => {
                let n = number(&value()?, "--nodes")? as usize;
                if n == 0 {
                    return Err("--nodes must be at least 1".into());
                }
                scenario.config = SimConfig {
                    nodes: n,
                    ..scenario.config
                };
            }
            "--components" => components = number(&value()?, "--components")? as usize,
            "--duration" => {
                scenario.duration = Duration::from_secs(number(&value()?, "--duration")?)
            }
            "--faults" => {
                let v = value()?;
                scenario.faults = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        FaultKind::parse(s).ok_or_else(|| {
                            format!("unknown fault {s:?}; the faults are crash, quick-restart, pause, partition, delay")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}; {USAGE}")),
        }
    }
    scenario.workload = Workload {
        plain: components / 2,
        replicated: components - components / 2,
        ..Workload::default()
    };
    Ok((seed, scenario))
}

fn number(s: &str, what: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} takes a whole number, not {s:?}"))
}

fn main() -> ExitCode {
    let (seed, scenario) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    println!("seed {seed}");
    let wall = std::time::Instant::now();
    let outcome = scenario.run(seed);
    for line in &outcome.plan {
        println!("  {line}");
    }
    println!(
        "calls {} made, {} acknowledged; {:?} of wall time",
        outcome.calls.0,
        outcome.calls.1,
        wall.elapsed()
    );
    for check in &outcome.report.checks {
        match &check.verdict {
            Verdict::Pass => println!("{:<16} pass", check.name),
            Verdict::Fail(why) => println!("{:<16} FAIL: {why}", check.name),
        }
    }
    println!("trace {:016x}", outcome.report.trace);
    if outcome.report.passed() {
        ExitCode::SUCCESS
    } else {
        let faults: Vec<&str> = scenario.faults.iter().map(|f| f.name()).collect();
        eprintln!(
            "replay: cargo run --release --example sim -- --seed {seed} --nodes {} --components {} --duration {} --faults {}",
            scenario.config.nodes,
            scenario.workload.plain + scenario.workload.replicated,
            scenario.duration.as_secs(),
            faults.join(",")
        );
        ExitCode::from(1)
    }
}
