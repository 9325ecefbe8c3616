//! Metrics through the [`metrics`] facade, and the recent moves, restarts and
//! promotions the cluster page shows.
//!
//! A hub records its metrics through the facade's macros. A hub built with
//! [`HubBuilder::admin_listen`](crate::HubBuilder::admin_listen) keeps a Prometheus
//! recorder of its own (`metrics-exporter-prometheus`) and records into it, so that its
//! `/metrics` page shows this hub alone, however many hubs the process runs; a hub
//! without one records into the application's global recorder
//! (`metrics::set_global_recorder`), or nowhere when there is none (the facade's no-op,
//! a few nanoseconds a metric).
//!
//! The metrics (every name starts with `processhub_`):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `calls_total` | counter | `type`, `method`, `outcome` (`ok`, or the error's kind) | calls made through handles on this node |
//! | `call_duration_seconds` | histogram | `type`, `method` | their latency, retries included |
//! | `events_total` | counter | `event` (the hook point, snake case) | every [`HubEvent`] |
//! | `moves_total` | counter | `outcome` (`ok`, `failed`) | moves out of this node |
//! | `restarts_total` | counter | `reason` (`node_down`, `panicked`) | restarts on this node |
//! | `promotions_total` | counter | | standbys here promoted to primary |
//! | `writes_acknowledged_total` | counter | `by` (`standbys`, `primary`) | identified writes from this node to a replicated child on another, by who acknowledged them first: every standby's word, or the primary's reply (see `core::held`) |
//! | `registry_size` | gauge | | children in this node's registry (the cluster's) |
//! | `children` | gauge | `type` | children running on this node |
//! | `awake_children` | gauge | | of those, the awake ones (with an actor) |
//! | `members` | gauge | `state` (`up`, `unreachable`) | members in this node's view |
//! | `connections` | gauge | | peer connections open |
//! | `hook_queue_depth` | gauge | | events queued for the hook handlers, not yet run |
//!
//! Gauges are set when `/metrics` is read (and by [`Telemetry::refresh`]), from the
//! hub's state at that moment: nothing is counted on the hot path for them.
//!
//! The handles of the per-call and per-event metrics are registered with the recorder
//! at their first use and kept (as the `metrics` crate means handles to be used): a
//! call then costs a map lookup and two atomic updates, not a key built and looked up
//! in the recorder. So install an application recorder before starting hubs: metrics
//! first used before it stay with the no-op recorder, as the facade documents.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::events::{HubEvent, RestartReason};
use crate::hooks::HookPoint;

/// How many moves, restarts and promotions the cluster page lists.
pub(crate) const RECENT: usize = 100;

/// The latency buckets of `processhub_call_duration_seconds`: 50 µs to 10 s.
const CALL_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// One move, restart or promotion, as the cluster page lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Recent {
    /// When, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// `move`, `move_failed`, `restart` or `promotion`.
    pub(crate) kind: &'static str,
    /// The child.
    pub(crate) id: String,
    /// What happened, in words.
    pub(crate) text: String,
}

/// The handles of one (type, method, outcome) of calls.
#[derive(Clone)]
struct CallMetrics {
    count: metrics::Counter,
    latency: metrics::Histogram,
}

type CallKey = (&'static str, &'static str, &'static str);

/// A hub's metrics recorder (its own, or the global one) and its recent events.
pub(crate) struct Telemetry {
    /// The hub's own Prometheus recorder (with an admin address).
    prometheus: Option<(PrometheusRecorder, PrometheusHandle)>,
    recent: Mutex<VecDeque<Recent>>,
    /// The call metrics registered so far.
    calls: RwLock<HashMap<CallKey, CallMetrics, foldhash::fast::FixedState>>,
    /// `processhub_events_total`, per hook point (in [`HookPoint::ALL`]'s order).
    events: OnceLock<Box<[metrics::Counter]>>,
    /// `processhub_writes_acknowledged_total`: by the standbys, by the primary.
    acknowledged: OnceLock<[metrics::Counter; 2]>,
    /// The same counts, kept here too: the simulator reports them (it has no recorder).
    acknowledged_counts: [AtomicU64; 2],
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("prometheus", &self.prometheus.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Telemetry recording into the global recorder, or (`prometheus`) into a
    /// Prometheus recorder of the hub's own.
    pub(crate) fn new(prometheus: bool) -> Self {
        let prometheus = prometheus.then(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        "processhub_call_duration_seconds".into(),
                    ),
                    CALL_BUCKETS,
                )
                .expect("the buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            (recorder, handle)
        });
        Self {
            prometheus,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            calls: RwLock::new(HashMap::default()),
            events: OnceLock::new(),
            acknowledged: OnceLock::new(),
            acknowledged_counts: Default::default(),
        }
    }

    /// An identified write (to a replicated child on another node) was acknowledged,
    /// by the word of its standbys or by its primary's reply.
    pub(crate) fn write_acknowledged(&self, by_standbys: bool) {
        let counters = self.acknowledged.get_or_init(|| {
            self.record(|| {
                ["standbys", "primary"]
                    .map(|by| metrics::counter!("processhub_writes_acknowledged_total", "by" => by))
            })
        });
        counters[usize::from(!by_standbys)].increment(1);
        self.acknowledged_counts[usize::from(!by_standbys)].fetch_add(1, Ordering::Relaxed);
    }

    /// Identified writes acknowledged so far: by their standbys' word, by their
    /// primary's reply.
    #[cfg(feature = "sim")]
    pub(crate) fn writes_acknowledged(&self) -> (u64, u64) {
        let [standbys, primary] = &self.acknowledged_counts;
        (
            standbys.load(Ordering::Relaxed),
            primary.load(Ordering::Relaxed),
        )
    }

    /// Runs `f`, whose metrics go to this hub's recorder.
    pub(crate) fn record<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.prometheus {
            Some((recorder, _)) => metrics::with_local_recorder(recorder, f),
            None => f(),
        }
    }

    /// The Prometheus text of this hub's metrics; `None` without an admin address.
    pub(crate) fn render(&self) -> Option<String> {
        self.prometheus.as_ref().map(|(_, handle)| handle.render())
    }

    /// Counts `event`, and keeps it if the cluster page lists its kind.
    pub(crate) fn event(&self, event: &HubEvent) {
        let counters = self.events.get_or_init(|| {
            self.record(|| {
                HookPoint::ALL
                    .iter()
                    .map(|p| metrics::counter!("processhub_events_total", "event" => p.name()))
                    .collect()
            })
        });
        let point = event.point();
        if let Some(i) = HookPoint::ALL.iter().position(|p| *p == point) {
            counters[i].increment(1);
        }
        self.record(|| match event {
            HubEvent::ChildMigrated { .. } => {
                metrics::counter!("processhub_moves_total", "outcome" => "ok").increment(1)
            }
            HubEvent::MigrationFailed { .. } => {
                metrics::counter!("processhub_moves_total", "outcome" => "failed").increment(1)
            }
            HubEvent::ChildRestarted { reason, .. } => {
                let reason = match reason {
                    RestartReason::NodeDown { .. } => "node_down",
                    RestartReason::Panicked { .. } => "panicked",
                };
                metrics::counter!("processhub_restarts_total", "reason" => reason).increment(1)
            }
            HubEvent::PrimaryPromoted { .. } => {
                metrics::counter!("processhub_promotions_total").increment(1)
            }
            _ => {}
        });
        if let Some(recent) = recent(event) {
            let mut list = self.recent.lock().unwrap();
            if list.len() == RECENT {
                list.pop_front();
            }
            list.push_back(recent);
        }
    }

    /// The moves, restarts and promotions kept, newest first.
    pub(crate) fn recent(&self) -> Vec<Recent> {
        self.recent.lock().unwrap().iter().rev().cloned().collect()
    }

    /// A call through a handle ended after `took`.
    pub(crate) fn call(
        &self,
        type_name: &'static str,
        method: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let key = (type_name, method, outcome);
        let add = |m: &CallMetrics| {
            m.count.increment(1);
            m.latency.record(took.as_secs_f64());
        };
        if let Some(m) = self.calls.read().unwrap().get(&key) {
            return add(m);
        }
        let m = self.record(|| CallMetrics {
            count: metrics::counter!("processhub_calls_total",
                "type" => type_name, "method" => method, "outcome" => outcome),
            latency: metrics::histogram!("processhub_call_duration_seconds",
                "type" => type_name, "method" => method),
        });
        add(&m);
        self.calls.write().unwrap().insert(key, m);
    }

    /// Sets the gauges from the hub's state now.
    pub(crate) fn refresh(&self, gauges: &Gauges) {
        self.record(|| {
            metrics::gauge!("processhub_registry_size").set(gauges.registry as f64);
            for (type_name, n) in &gauges.children {
                metrics::gauge!("processhub_children", "type" => type_name.clone()).set(*n as f64);
            }
            metrics::gauge!("processhub_awake_children").set(gauges.awake as f64);
            metrics::gauge!("processhub_members", "state" => "up").set(gauges.up as f64);
            metrics::gauge!("processhub_members", "state" => "unreachable")
                .set(gauges.unreachable as f64);
            metrics::gauge!("processhub_connections").set(gauges.connections as f64);
            metrics::gauge!("processhub_hook_queue_depth").set(gauges.hook_queue as f64);
        });
    }
}

/// The hub's state the gauges show.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    pub(crate) registry: usize,
    /// Children running here, by type (every type that ever ran here, so that a type
    /// whose last child went shows 0).
    pub(crate) children: Vec<(String, usize)>,
    pub(crate) awake: usize,
    pub(crate) up: usize,
    pub(crate) unreachable: usize,
    pub(crate) connections: usize,
    pub(crate) hook_queue: usize,
}

fn recent(event: &HubEvent) -> Option<Recent> {
    let (kind, id, text) = match event {
        HubEvent::ChildMigrated {
            id,
            from,
            to,
            epoch,
        } => (
            "move",
            id,
            format!("moved from {from} to {to} (epoch {epoch})"),
        ),
        HubEvent::MigrationFailed { id, to, reason } => {
            ("move_failed", id, format!("move to {to} failed: {reason}"))
        }
        HubEvent::ChildRestarted {
            id,
            node,
            epoch,
            reason,
        } => {
            let why = match reason {
                RestartReason::NodeDown { node } => format!("its node {node} went"),
                RestartReason::Panicked { message } => format!("it panicked: {message}"),
            };
            (
                "restart",
                id,
                format!("restarted on {node} (epoch {epoch}): {why}"),
            )
        }
        HubEvent::PrimaryPromoted {
            id,
            node,
            epoch,
            from,
        } => (
            "promotion",
            id,
            format!("standby on {node} promoted (epoch {epoch}), primary {from} went"),
        ),
        _ => return None,
    };
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Some(Recent {
        at_ms,
        kind,
        id: id.clone(),
        text,
    })
}

impl HookPoint {
    /// Its name in snake case (`child_started`), as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::NodeJoined => "node_joined",
            HookPoint::NodeLeft => "node_left",
            HookPoint::ChildStarted => "child_started",
            HookPoint::ChildStopped => "child_stopped",
            HookPoint::ChildRestarted => "child_restarted",
            HookPoint::ChildMigrated => "child_migrated",
            HookPoint::MigrationFailed => "migration_failed",
            HookPoint::DrainCompleted => "drain_completed",
            HookPoint::ChildDown => "child_down",
            HookPoint::PrimaryPromoted => "primary_promoted",
            HookPoint::ReplicaAdded => "replica_added",
            HookPoint::ReplicaRemoved => "replica_removed",
            HookPoint::StandbyStarted => "standby_started",
            HookPoint::StandbyEnded => "standby_ended",
            HookPoint::ChildLost => "child_lost",
            HookPoint::NodesDowned => "nodes_downed",
            HookPoint::QuorumLost => "quorum_lost",
            HookPoint::QuorumRegained => "quorum_regained",
            HookPoint::Rejoined => "rejoined",
            HookPoint::DuplicateResolved => "duplicate_resolved",
            HookPoint::DuplicateMerged => "duplicate_merged",
            HookPoint::Unauthenticated => "unauthenticated",
            HookPoint::HookPanicked => "hook_panicked",
            HookPoint::ChildRegistered => "child_registered",
            HookPoint::ChildUnregistered => "child_unregistered",
            HookPoint::ChildArrived => "child_arrived",
            HookPoint::StartsForwarded => "starts_forwarded",
            HookPoint::RedistributionStarted => "redistribution_started",
            HookPoint::RedistributionCompleted => "redistribution_completed",
            HookPoint::ShuttingDown => "shutting_down",
            HookPoint::MigrationDeferred => "migration_deferred",
            HookPoint::NodeUnreachable => "node_unreachable",
            HookPoint::NodeReachable => "node_reachable",
        }
    }
}
