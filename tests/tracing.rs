//! Tracing: calls, starts and stops run in `processhub.*` spans, and a call's trace id
//! goes with it to the node that serves it, and on to the calls that node makes while
//! serving it. One test in this binary: it installs the process's global subscriber.

mod common;

use std::sync::{Mutex, OnceLock};

use common::*;
use processhub::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Every `processhub` span seen: its name and its `trace_id`, by span id.
static SPANS: Mutex<Vec<(u64, &'static str, Option<u64>)>> = Mutex::new(Vec::new());

struct Recorder;

struct TraceId(Option<u64>);

impl Visit for TraceId {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "trace_id" {
            self.0 = Some(value);
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut t = TraceId(None);
        attrs.record(&mut t);
        SPANS
            .lock()
            .unwrap()
            .push((id.into_u64(), attrs.metadata().name(), t.0));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut t = TraceId(None);
        values.record(&mut t);
        if let Some(trace) = t.0 {
            for s in SPANS.lock().unwrap().iter_mut().rev() {
                if s.0 == id.into_u64() {
                    s.2 = Some(trace);
                    break;
                }
            }
        }
    }
}

/// The hub a relay calls through.
static RELAY_HUB: OnceLock<Hub> = OnceLock::new();

/// Calls a `Tally` while it serves a call.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Relay {
    relayed: u64,
}

#[distributed]
impl Relay {
    /// Adds 1 to the tally `to`, through the relay hub.
    pub async fn relay(&mut self, to: String) -> u64 {
        self.relayed += 1;
        let hub = RELAY_HUB.get().expect("set");
        Tally::handle(hub, to).add(1).await.unwrap()
    }
}

fn traces_of(name: &str) -> Vec<Option<u64>> {
    SPANS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.1 == name)
        .map(|s| s.2)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_trace_id_reaches_the_serving_node_and_the_calls_it_makes() {
    let filter =
        tracing_subscriber::filter::Targets::new().with_target("processhub", tracing::Level::DEBUG);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Recorder.with_filter(filter)),
    )
    .expect("the only subscriber of this binary");
    let hubs = cluster("tracing", 2).await;
    let (a, b) = (&hubs[0], &hubs[1]);
    RELAY_HUB.set(b.clone()).unwrap();
    let on = |hub: &Hub, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|id| a.ring_owner(id) == Some(hub.node_id()))
            .unwrap()
    };
    let (relay, tally) = (on(b, "relay"), on(a, "tally"));
    Relay::start(a, relay.clone(), Relay::default())
        .await
        .unwrap();
    Tally::start(a, tally.clone(), Tally::default())
        .await
        .unwrap();
    assert!(
        !traces_of("processhub.start").is_empty(),
        "starts have spans"
    );
    SPANS.lock().unwrap().clear();

    // a → relay on b → tally on a: one trace.
    assert_eq!(
        Relay::handle(a, relay.clone())
            .relay(tally.clone())
            .await
            .unwrap(),
        1
    );
    let calls = traces_of("processhub.call");
    let served = traces_of("processhub.serve");
    assert_eq!(
        calls.len(),
        2,
        "the relay call and the call it made: {calls:?}"
    );
    let trace = calls[0].expect("a trace id");
    assert_eq!(
        calls,
        vec![Some(trace), Some(trace)],
        "the inner call continues the trace"
    );
    assert_eq!(
        served,
        vec![Some(trace), Some(trace)],
        "both served under it, on b then on a"
    );
    assert!(
        processhub::current_trace_id().is_none(),
        "no call served on this task"
    );

    // Another call is another trace.
    SPANS.lock().unwrap().clear();
    Tally::handle(b, tally.clone()).add(1).await.unwrap();
    let again = traces_of("processhub.call");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0], Some(trace));
    assert_eq!(traces_of("processhub.serve"), again);
    Tally::stop(b, &tally).await.unwrap();
    assert_eq!(traces_of("processhub.stop").len(), 1);
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}
