//! The options the simulator's command lines share (`sim`, `soak`).

use std::time::Duration;

use processhub::sim::{FaultKind, Scenario, SimConfig, Workload};

/// A whole number option.
pub fn number(s: &str, what: &str) -> Result<u64, String> {
    s.parse()
        .map_err(|_| format!("{what} takes a whole number, not {s:?}"))
}

/// A scenario being built from options: `--nodes`, `--components`, `--duration`,
/// `--faults`, `--ship state|calls`.
pub struct ScenarioOptions {
    pub scenario: Scenario,
    pub components: usize,
    /// The replicated counters ship their writes as calls (`--ship calls`).
    pub ship_calls: bool,
}

impl ScenarioOptions {
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            components: 40,
            ship_calls: false,
        }
    }

    /// Takes `arg` if it is one of the scenario's options (its value from `value`);
    /// false if it is not one.
    pub fn take(
        &mut self,
        arg: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        match arg {
            "--nodes" => {
                let n = number(&value()?, "--nodes")? as usize;
                if n == 0 {
                    return Err("--nodes must be at least 1".into());
                }
                self.scenario.config = SimConfig {
                    nodes: n,
                    ..self.scenario.config.clone()
                };
            }
            "--components" => self.components = number(&value()?, "--components")? as usize,
            "--duration" => {
                self.scenario.duration = Duration::from_secs(number(&value()?, "--duration")?)
            }
            "--faults" => self.scenario.faults = FaultKind::parse_list(&value()?)?,
            "--ship" => {
                self.ship_calls = match value()?.as_str() {
                    "state" => false,
                    "calls" => true,
                    other => {
                        return Err(format!(
                            "--ship takes state (the default) or calls, not {other:?}"
                        ))
                    }
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The scenario: half the components plain counters, half replicated.
    pub fn finish(self) -> Scenario {
        Scenario {
            workload: Workload {
                plain: self.components / 2,
                replicated: self.components - self.components / 2,
                ship_calls: self.ship_calls,
                ..Workload::default()
            },
            ..self.scenario
        }
    }
}
