//! The simulator from the command line: a cluster on simulated time, faults drawn from a
//! seed, the checker's verdict on every promise, and the fingerprint of the run.
//!
//! ```sh
//! cargo run --release --example sim -- --seed 7 --nodes 3 --components 40 --duration 4 --faults crash,pause
//! ```
//!
//! Prints the options the seed drew (faults, times, nodes), one line per invariant with
//! its verdict, and last `trace <hex>`; exits with 1 on any violation, 2 on bad options.
//! `--events` also prints every hub event with its simulated time and node;
//! `RUST_LOG=processhub=debug` prints the hubs' logs on stderr.
//! The same seed and options give the same output: a failing seed is replayed with the
//! same command.

use std::process::ExitCode;

use processhub::sim::{Scenario, Verdict};

#[path = "shared/options.rs"]
mod options;
use options::{number, ScenarioOptions};

const USAGE: &str = "usage: sim [--seed S] [--nodes N] [--components C] [--duration SECS] \
                     [--faults crash,quick-restart,pause,partition,one-way,delay,drop,duplicate,reorder,reset,slow] [--ship state|calls] [--events]";

fn parse() -> Result<(u64, Scenario), String> {
    let mut seed = 1;
    let mut opts = ScenarioOptions::new(Scenario::default());
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
            "--seed" => seed = number(&value()?, "--seed")?,
            "--events" => opts.scenario.record_events = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}; {USAGE}")),
        }
    }
    Ok((seed, opts.finish()))
}

fn main() -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
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
    for line in &outcome.events {
        println!("    {line}");
    }
    println!(
        "calls {} made, {} acknowledged; {:?} of wall time",
        outcome.calls.0,
        outcome.calls.1,
        wall.elapsed()
    );
    println!(
        "replicated writes from another node: {} acknowledged by their standbys' word, {} by their primary's reply",
        outcome.writes_acknowledged.0, outcome.writes_acknowledged.1
    );
    for check in &outcome.report.checks {
        match &check.verdict {
            Verdict::Pass => println!("{:<16} pass", check.name),
            Verdict::Fail(why) => println!("{:<16} FAIL: {why}", check.name),
        }
    }
    if let Some(first) = &outcome.first_violation {
        println!("first violation at {:?}: {}", first.at, first.what);
    }
    println!("trace {:016x}", outcome.report.trace);
    if outcome.report.passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("replay: {}", scenario.replay_command(seed));
        ExitCode::from(1)
    }
}
