//! Start hooks as the engine runs them: outside the node's lock, once a start is
//! admitted, with typed errors from any node; role signals on every start and for
//! passive standbys; the owners of a replicated child.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use processhub::prelude::*;
use processhub::Role;

/// Records the roles its state went through.
#[distributed(replicas = 2)]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Roles {
    roles: Vec<Role>,
}

#[distributed]
impl Roles {
    /// The roles, in order.
    pub fn roles(&self) -> Vec<Role> {
        self.roles.clone()
    }

    #[on_role_change]
    fn role(&mut self, role: Role) {
        self.roles.push(role);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_child_hears_it_is_the_primary_wherever_it_starts_and_lists_its_owners() {
    let hubs = cluster("roles", 2).await;
    let mut events: Vec<_> = hubs.iter().map(|h| h.events()).collect();
    let ids: Vec<String> = (0..40).map(|i| format!("roles-{i}")).collect();
    for r in Roles::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Roles::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let here = ids
        .iter()
        .filter(|id| hubs[0].lookup(id).unwrap().owner == hubs[0].node_id())
        .count();
    assert!(here > 0 && here < ids.len(), "started here and there");
    for id in &ids {
        let roles = Roles::handle(&hubs[1], id.clone()).roles().await.unwrap();
        assert_eq!(roles, vec![Role::Primary], "{id}");
    }
    wait_until("a standby for each", Duration::from_secs(10), || async {
        ids.iter()
            .all(|id| hubs[0].lookup(id).is_some_and(|i| i.standbys.len() == 1))
    })
    .await;
    for id in &ids {
        let info = hubs[1].lookup(id).unwrap();
        let other = if info.owner == hubs[0].node_id() {
            hubs[1].node_id()
        } else {
            hubs[0].node_id()
        };
        assert_eq!(info.owners(), vec![info.owner, other], "{id}");
    }
    // Each passive standby heard that its role began, on its own node.
    let mut standbys = Vec::new();
    for (h, e) in hubs.iter().zip(&mut events) {
        while let Ok(ev) = e.try_recv() {
            if let HubEvent::StandbyStarted { id, node, .. } = ev {
                assert_eq!(node, h.node_id());
                assert_ne!(h.lookup(&id).unwrap().owner, node, "{id}");
                standbys.push(id);
            }
        }
    }
    standbys.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(standbys, expected);
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// Its `#[on_start]` panics for the unlucky number.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Fragile {
    n: u64,
}

#[distributed]
impl Fragile {
    /// The number.
    pub fn get(&self) -> u64 {
        self.n
    }

    #[on_start]
    fn check(&mut self) {
        if self.n == 13 {
            panic!("unlucky");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_hook_that_panics_is_a_typed_error_from_any_node_and_nothing_starts() {
    let hubs = cluster("fragile", 2).await;
    let ids: Vec<String> = (0..12).map(|i| format!("fragile-{i}")).collect();
    let owners: Vec<NodeId> = ids
        .iter()
        .map(|id| hubs[0].ring_owner(id).unwrap())
        .collect();
    assert!(owners.contains(&hubs[0].node_id()) && owners.contains(&hubs[1].node_id()));
    for (id, owner) in ids.iter().zip(&owners) {
        match Fragile::start(&hubs[0], id.clone(), Fragile { n: 13 }).await {
            Err(StartError::Hook {
                id: got,
                node,
                message,
            }) => {
                assert_eq!((&got, node), (id, *owner));
                assert!(message.contains("unlucky"), "{message}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    for h in &hubs {
        for id in &ids {
            assert!(h.lookup(id).is_none(), "{id} is registered nowhere");
        }
    }
    // The ids are free: a start that does not panic goes through.
    for id in &ids {
        Fragile::start(&hubs[1], id.clone(), Fragile { n: 1 })
            .await
            .unwrap();
        assert_eq!(
            Fragile::handle(&hubs[0], id.clone()).get().await.unwrap(),
            1
        );
    }
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// Set while a [`Slow`] start hook runs.
static SLOW_HOOK_RUNNING: AtomicBool = AtomicBool::new(false);
/// Lets a [`Slow`] start hook return.
static SLOW_HOOK_RELEASE: AtomicBool = AtomicBool::new(false);

/// Its `#[on_start]` waits (at most 10 s) until the test lets it go.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Slow {
    n: u64,
}

#[distributed]
impl Slow {
    /// The number.
    pub fn get(&self) -> u64 {
        self.n
    }

    #[on_start]
    fn wait_for_the_test(&mut self) {
        SLOW_HOOK_RUNNING.store(true, Ordering::SeqCst);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !SLOW_HOOK_RELEASE.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_hook_holds_up_no_call_to_another_child_of_its_node() {
    let hub = hub("slow-hook", &[]).await;
    Tally::start(&hub, "busy", Tally::default()).await.unwrap();
    let starting = {
        let hub = hub.clone();
        tokio::spawn(async move { Slow::start(&hub, "slow", Slow { n: 7 }).await })
    };
    wait_until("the start hook runs", Duration::from_secs(10), || async {
        SLOW_HOOK_RUNNING.load(Ordering::SeqCst)
    })
    .await;
    // The hook still runs (it waits for us): a call to another child is served.
    let served =
        tokio::time::timeout(Duration::from_secs(5), Tally::handle(&hub, "busy").add(1)).await;
    SLOW_HOOK_RELEASE.store(true, Ordering::SeqCst);
    assert_eq!(served.expect("served while the hook ran").unwrap(), 1);
    starting.await.unwrap().unwrap();
    assert_eq!(Slow::handle(&hub, "slow").get().await.unwrap(), 7);
    hub.shutdown().await.unwrap();
}

// ---- hook handlers (`Hub::hooks`) ----

/// Waits until `cond` holds (checked every 5 ms), for at most 20 s.
async fn until(what: &str, cond: impl Fn() -> bool) {
    wait_until(what, Duration::from_secs(20), || {
        let ok = cond();
        async move { ok }
    })
    .await;
}

/// Handlers of a point run by priority (higher first, equal ones in the order they
/// were registered); a cancelled one runs no more; a handler of another point never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_handlers_run_by_priority_and_stop_when_cancelled() {
    use processhub::HookPoint;
    use std::sync::{Arc, Mutex};
    let h = hub("hooks-order", &[]).await;
    let ran: Arc<Mutex<Vec<(&str, String)>>> = Arc::default();
    let mut ids = Vec::new();
    for (name, priority) in [("low", 1), ("high", 10), ("mid", 5), ("mid-later", 5)] {
        let ran = ran.clone();
        ids.push(
            h.hooks()
                .register(HookPoint::ChildStarted, priority, move |e| {
                    if let HubEvent::ChildStarted { id, .. } = e {
                        ran.lock().unwrap().push((name, id.clone()));
                    }
                }),
        );
    }
    let stops = ran.clone();
    h.hooks().register(HookPoint::ChildStopped, 100, move |_| {
        stops.lock().unwrap().push(("stop", String::new()))
    });
    Tally::start(&h, "first", Tally::default()).await.unwrap();
    until("four handlers ran", || ran.lock().unwrap().len() == 4).await;
    fn order(ran: &[(&'static str, String)]) -> Vec<&'static str> {
        ran.iter().map(|(n, _)| *n).collect()
    }
    assert_eq!(
        order(&ran.lock().unwrap()),
        ["high", "mid", "mid-later", "low"]
    );
    assert!(h.hooks().cancel(ids[2]), "mid was registered");
    assert!(!h.hooks().cancel(ids[2]), "and is no more");
    ran.lock().unwrap().clear();
    Tally::start(&h, "second", Tally::default()).await.unwrap();
    until("three handlers ran", || ran.lock().unwrap().len() == 3).await;
    let ran_now = ran.lock().unwrap().clone();
    assert_eq!(order(&ran_now), ["high", "mid-later", "low"]);
    assert!(ran_now.iter().all(|(_, id)| id == "second"));
    h.shutdown().await.unwrap();
}

/// A handler that panics is caught and reported (`HubEvent::HookPanicked`); the
/// handlers after it run, later events reach it again, and the hub serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_hook_handler_is_reported_and_the_others_and_the_hub_go_on() {
    use processhub::HookPoint;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let h = hub("hooks-panic", &[]).await;
    let mut events = h.events();
    let tried = Arc::new(AtomicUsize::new(0));
    let after = Arc::new(AtomicUsize::new(0));
    let t = tried.clone();
    let bad = h.hooks().register(HookPoint::ChildStarted, 10, move |_| {
        t.fetch_add(1, Ordering::SeqCst);
        panic!("a bad hook");
    });
    let a = after.clone();
    h.hooks().register(HookPoint::ChildStarted, 0, move |_| {
        a.fetch_add(1, Ordering::SeqCst);
    });
    for id in ["p-1", "p-2"] {
        Tally::start(&h, id, Tally::default()).await.unwrap();
    }
    until("both handlers saw both starts", || {
        tried.load(Ordering::SeqCst) == 2 && after.load(Ordering::SeqCst) == 2
    })
    .await;
    let reported = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(HubEvent::HookPanicked {
                point,
                hook,
                message,
            }) = events.recv().await
            {
                return (point, hook, message);
            }
        }
    })
    .await
    .expect("the panic was reported");
    assert_eq!(reported.0, HookPoint::ChildStarted);
    assert_eq!(reported.1, bad);
    assert!(reported.2.contains("a bad hook"), "{}", reported.2);
    assert_eq!(Tally::handle(&h, "p-1").add(5).await.unwrap(), 5);
    h.shutdown().await.unwrap();
}

/// A handler that blocks holds up neither calls nor starts: they go on (and their
/// events queue) until it is let go, and then it sees every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_hook_handler_holds_up_no_call_and_no_start() {
    use processhub::HookPoint;
    use std::sync::{mpsc, Arc, Mutex};
    let h = hub("hooks-slow", &[]).await;
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    h.hooks().register(HookPoint::ChildStarted, 0, move |e| {
        if let HubEvent::ChildStarted { id, .. } = e {
            if id == "slow-0" {
                // Blocks the hook thread until the test lets it go.
                let _ = held.lock().unwrap().recv();
            }
            s.lock().unwrap().push(id.clone());
        }
    });
    Tally::start(&h, "slow-0", Tally::default()).await.unwrap();
    // The handler is blocked now: starts and calls go on.
    for i in 1..20 {
        Tally::start(&h, format!("slow-{i}"), Tally::default())
            .await
            .unwrap();
    }
    for i in 0..20 {
        let v = Tally::handle(&h, format!("slow-{i}")).add(1).await.unwrap();
        assert_eq!(v, 1);
    }
    assert!(seen.lock().unwrap().is_empty(), "the handler is still held");
    release.send(()).unwrap();
    until("the handler saw all 20 starts", || {
        seen.lock().unwrap().len() == 20
    })
    .await;
    let expected: Vec<String> = (0..20).map(|i| format!("slow-{i}")).collect();
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "in the order they happened"
    );
    h.shutdown().await.unwrap();
}

/// 100,000 events reach a handler, each once and in order, while calls run, though a
/// subscriber of `Hub::events` that does not read loses them (and is told so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_handler_gets_every_one_of_100000_events_in_order_while_calls_run() {
    use processhub::HookPoint;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex};
    let h = hub("hooks-many", &[]).await;
    let mut idle = h.events();
    let count = Arc::new(AtomicU64::new(0));
    let out_of_order = Arc::new(Mutex::new(None::<String>));
    let (c, o) = (count.clone(), out_of_order.clone());
    h.hooks().register(HookPoint::ChildStarted, 0, move |e| {
        if let HubEvent::ChildStarted { id, .. } = e {
            if !id.starts_with("many-") {
                return;
            }
            let n = c.load(Ordering::SeqCst);
            if *id != format!("many-{n}") && o.lock().unwrap().is_none() {
                *o.lock().unwrap() = Some(format!("event {n} was {id}"));
            }
            c.store(n + 1, Ordering::SeqCst);
        }
    });
    Tally::start(&h, "caller", Tally::default()).await.unwrap();
    let caller = h.clone();
    let calls = tokio::spawn(async move {
        let mut n = 0;
        for _ in 0..2_000 {
            n = Tally::handle(&caller, "caller").add(1).await.unwrap();
        }
        n
    });
    let total = 100_000u64;
    for batch in 0..(total / 1_000) {
        let items: Vec<(String, Tally)> = (batch * 1_000..(batch + 1) * 1_000)
            .map(|i| (format!("many-{i}"), Tally::default()))
            .collect();
        for r in Tally::start_many(&h, items).await {
            r.unwrap();
        }
    }
    assert_eq!(calls.await.unwrap(), 2_000, "the calls ran meanwhile");
    wait_until(
        "every event reached the handler",
        Duration::from_secs(60),
        || {
            let n = count.load(Ordering::SeqCst);
            async move { n >= total }
        },
    )
    .await;
    assert_eq!(count.load(Ordering::SeqCst), total, "each once");
    assert_eq!(*out_of_order.lock().unwrap(), None, "in order");
    assert!(
        matches!(
            idle.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
        ),
        "a subscriber that did not read is told it lagged"
    );
    h.shutdown().await.unwrap();
}

/// Before-start handlers run by priority on the hub a start is asked of: they change
/// the start state, or refuse the start with a reason the caller gets
/// (`StartError::Refused`); one that panics refuses too, and is reported; cancelled,
/// they run no more; another hub's starts do not run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_start_handlers_change_the_state_or_refuse_with_a_reason() {
    use processhub::{HookPoint, StartError};
    let hubs = cluster("hooks-before", 2).await;
    let (a, b) = (&hubs[0], &hubs[1]);
    let mut events = a.events();
    let bonus = a.hooks().before_start::<Tally>(10, |start| {
        if start.id().starts_with("vip-") {
            start.state().add(100);
        }
        Ok(())
    });
    a.hooks().before_start::<Tally>(5, |start| {
        if start.id().starts_with("bad-") {
            return Err(format!("{} is not allowed", start.id()));
        }
        // After the bonus (a higher priority ran first).
        start.state().add(1);
        Ok(())
    });
    Tally::start(a, "vip-1", Tally::default()).await.unwrap();
    assert_eq!(Tally::handle(b, "vip-1").get().await.unwrap(), 101);
    let refused = Tally::start(a, "bad-1", Tally::default()).await;
    assert_eq!(
        refused.err(),
        Some(StartError::Refused {
            id: "bad-1".into(),
            reason: "bad-1 is not allowed".into()
        })
    );
    assert!(a.lookup("bad-1").is_none(), "nothing started");
    let many = Tally::start_many(
        a,
        vec![
            ("plain-1".to_string(), Tally::default()),
            ("bad-2".to_string(), Tally::default()),
        ],
    )
    .await;
    assert!(many[0].is_ok());
    assert!(matches!(&many[1], Err(StartError::Refused { id, .. }) if id == "bad-2"));
    assert_eq!(Tally::handle(a, "plain-1").get().await.unwrap(), 1);
    // Another hub's starts do not run them.
    Tally::start(b, "vip-2", Tally::default()).await.unwrap();
    assert_eq!(Tally::handle(a, "vip-2").get().await.unwrap(), 0);
    // Cancelled: no bonus.
    assert!(a.hooks().cancel(bonus));
    Tally::start(a, "vip-3", Tally::default()).await.unwrap();
    assert_eq!(Tally::handle(a, "vip-3").get().await.unwrap(), 1);
    // A handler that panics refuses, and is reported.
    let broken = a
        .hooks()
        .before_start::<Tally>(20, |_| panic!("the check broke"));
    let refused = Tally::start(a, "any-1", Tally::default()).await;
    assert!(
        matches!(&refused, Err(StartError::Refused { reason, .. }) if reason.contains("the check broke")),
        "{refused:?}"
    );
    let reported = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(HubEvent::HookPanicked { point, hook, .. }) = events.recv().await {
                return (point, hook);
            }
        }
    })
    .await
    .expect("reported");
    assert_eq!(reported, (HookPoint::ChildStarted, broken));
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// The registry points run on every node, not only the one running the child; the
/// redistribution points bracket the moves a join causes, the arrivals are told where
/// they land, and a graceful shutdown announces itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_hooks_run_on_every_node_and_moves_are_bracketed() {
    use processhub::HookPoint;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<HubEvent>>>;
    let hubs = cluster("hooks-registry", 3).await;
    let seen: Vec<Seen> = hubs.iter().map(|_| Seen::default()).collect();
    for (h, s) in hubs.iter().zip(&seen) {
        for point in [
            HookPoint::ChildRegistered,
            HookPoint::ChildUnregistered,
            HookPoint::RedistributionStarted,
            HookPoint::RedistributionCompleted,
            HookPoint::ChildArrived,
        ] {
            let s = s.clone();
            h.hooks()
                .register(point, 0, move |e| s.lock().unwrap().push(e.clone()));
        }
    }
    let ids: Vec<String> = (0..30).map(|i| format!("reg-{i:02}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let registered = |s: &Seen| -> BTreeSet<String> {
        s.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                HubEvent::ChildRegistered { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    };
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    until("every node heard of every registration", || {
        seen.iter().all(|s| registered(s) == all)
    })
    .await;
    // Each registration names the owner every registry agrees on.
    for s in &seen {
        for e in s.lock().unwrap().iter() {
            if let HubEvent::ChildRegistered { id, owner, .. } = e {
                assert_eq!(hubs[0].lookup(id).unwrap().owner, *owner, "{id}");
            }
        }
    }
    for id in &ids[..5] {
        Tally::stop(&hubs[1], id).await.unwrap();
    }
    let unregistered = |s: &Seen| -> BTreeSet<String> {
        s.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                HubEvent::ChildUnregistered { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    };
    let stopped: BTreeSet<String> = ids[..5].iter().cloned().collect();
    until("every node heard of every removal", || {
        seen.iter().all(|s| unregistered(s) == stopped)
    })
    .await;

    // A join moves children: bracketed on each node that moves some, told on arrival.
    let mut joiner_events = Vec::new();
    let joiner = hub("hooks-registry", &[hubs[0].listen_addr()]).await;
    until("children moved to the joiner", || {
        joiner.local_children() > 0
    })
    .await;
    until("the moves are over", || {
        seen.iter().all(|s| {
            let s = s.lock().unwrap();
            let began = s
                .iter()
                .filter(|e| matches!(e, HubEvent::RedistributionStarted { .. }))
                .count();
            let ended = s
                .iter()
                .filter(|e| matches!(e, HubEvent::RedistributionCompleted { .. }))
                .count();
            began == ended
        })
    })
    .await;
    let mut moved = 0;
    for s in &seen {
        let s = s.lock().unwrap();
        let mut open = None;
        for e in s.iter() {
            match e {
                HubEvent::RedistributionStarted { children } => open = Some(*children),
                HubEvent::RedistributionCompleted { moved: m, failed } => {
                    assert_eq!(Some(m + failed), open.take(), "completed what started");
                    moved += m;
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        moved,
        joiner.local_children(),
        "every move out is a child here"
    );
    // The other nodes heard the moved children registered on the joiner.
    until("the moves registered everywhere", || {
        seen.iter().all(|s| {
            s.lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, HubEvent::ChildRegistered { owner, .. } if *owner == joiner.node_id()))
                .count()
                == moved
        })
    })
    .await;
    // The joiner leaves: its children move back, and their new nodes are told.
    let mut events = joiner.events();
    let leaving = joiner.local_children();
    joiner.shutdown().await.unwrap();
    while let Ok(e) = events.try_recv() {
        joiner_events.push(e);
    }
    let arrived = |s: &Seen| {
        s.lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, HubEvent::ChildArrived { .. }))
            .count()
    };
    until("each child handed back was told on arrival", || {
        seen.iter().map(arrived).sum::<usize>() == leaving
    })
    .await;
    assert!(
        matches!(joiner_events.first(), Some(HubEvent::ShuttingDown { node }) if *node == joiner.node_id()),
        "{joiner_events:?}"
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}

/// A before-move handler holds a child here (serving) until it says `Ready`; the
/// others move meanwhile. With a handler that never consents, the move goes ahead
/// once the maximum deferral passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_consent_and_goes_ahead_after_the_maximum_deferral() {
    use processhub::{MoveConsent, MoveRequest};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let a = Hub::builder("hooks-consent")
        .cluster_key(KEY)
        .max_move_deferral(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    // 20 of 200 end in 7: some of them belong on b whatever the random node ids.
    let ids: Vec<String> = (0..200).map(|i| format!("busy-{i:03}")).collect();
    for r in Tally::start_many(
        &a,
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let done = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicUsize::new(0));
    {
        let (done, asked) = (done.clone(), asked.clone());
        a.hooks().before_move(0, move |m: &MoveRequest<'_>| {
            if m.id.ends_with('7') && !done.load(Ordering::Acquire) {
                asked.fetch_add(1, Ordering::Relaxed);
                MoveConsent::Defer
            } else {
                MoveConsent::Ready
            }
        });
    }
    let b = hub("hooks-consent", &[a.listen_addr()]).await;
    let to_b: Vec<&String> = ids
        .iter()
        .filter(|i| b.ring_owner(i) == Some(b.node_id()))
        .collect();
    let held: Vec<&String> = to_b.iter().copied().filter(|i| i.ends_with('7')).collect();
    assert!(!held.is_empty(), "some deferred ids belong on b");
    // Asked again and again, and still here, serving.
    until("the deferred moves were asked about a few times", || {
        asked.load(Ordering::Relaxed) >= 3 * held.len()
    })
    .await;
    until("the others moved meanwhile", || {
        to_b.iter()
            .filter(|i| !i.ends_with('7'))
            .all(|i| a.lookup(i).is_some_and(|c| c.owner == b.node_id()))
    })
    .await;
    for id in &held {
        assert_eq!(a.lookup(id).unwrap().owner, a.node_id(), "{id} waits");
        assert_eq!(Tally::handle(&b, (*id).clone()).add(1).await.unwrap(), 1);
    }
    done.store(true, Ordering::Release);
    until("every child of b is on b", || {
        to_b.iter()
            .all(|i| a.lookup(i).is_some_and(|c| c.owner == b.node_id()))
    })
    .await;
    for id in &held {
        assert_eq!(
            Tally::handle(&a, (*id).clone()).get().await.unwrap(),
            1,
            "moved with its state"
        );
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();

    // A handler that never consents: the maximum deferral lets the moves go.
    let a = Hub::builder("hooks-consent-max")
        .cluster_key(KEY)
        .max_move_deferral(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    for r in Tally::start_many(
        &a,
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    a.hooks().before_move(0, |_| MoveConsent::Defer);
    let b = hub("hooks-consent-max", &[a.listen_addr()]).await;
    let to_b: Vec<&String> = ids
        .iter()
        .filter(|i| b.ring_owner(i) == Some(b.node_id()))
        .collect();
    until("moved despite the deferral", || {
        to_b.iter()
            .all(|i| a.lookup(i).is_some_and(|c| c.owner == b.node_id()))
    })
    .await;
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Moves a child only when it says so (`#[move_consent]`).
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Careful {
    busy: bool,
    n: u64,
}

#[distributed]
impl Careful {
    /// Marks it busy (it defers moves) or not.
    pub fn set_busy(&mut self, busy: bool) {
        self.busy = busy;
    }

    /// Adds `by`; the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    #[move_consent]
    fn consent(&self) -> processhub::MoveConsent {
        if self.busy {
            processhub::MoveConsent::Defer
        } else {
            processhub::MoveConsent::Ready
        }
    }
}

/// A component that says `Defer` stays and serves while the others move, is reported
/// (`MigrationDeferred`), and moves with its state once it says `Ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_defers_its_own_move_until_it_is_ready() {
    let a = Hub::builder("hooks-own-consent")
        .cluster_key(KEY)
        .max_move_deferral(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    // 20 of 200 end in 3: some of them belong on b whatever the random node ids.
    let ids: Vec<String> = (0..200).map(|i| format!("careful-{i:03}")).collect();
    for r in Careful::start_many(
        &a,
        ids.iter()
            .map(|i| (i.clone(), Careful::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for id in ids.iter().filter(|i| i.ends_with('3')) {
        let c = Careful::handle(&a, id.clone());
        c.set_busy(true).await.unwrap();
        c.add(5).await.unwrap();
    }
    let mut events = a.events();
    let b = hub("hooks-own-consent", &[a.listen_addr()]).await;
    let to_b: Vec<&String> = ids
        .iter()
        .filter(|i| b.ring_owner(i) == Some(b.node_id()))
        .collect();
    let held: Vec<&String> = to_b.iter().copied().filter(|i| i.ends_with('3')).collect();
    assert!(!held.is_empty(), "some busy ids belong on b");
    until("the others moved", || {
        to_b.iter()
            .filter(|i| !i.ends_with('3'))
            .all(|i| a.lookup(i).is_some_and(|c| c.owner == b.node_id()))
    })
    .await;
    let mut deferred = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let HubEvent::MigrationDeferred { ids, to } = e {
            assert_eq!(to, b.node_id());
            deferred.extend(ids);
        }
    }
    deferred.sort();
    let mut expected: Vec<String> = held.iter().map(|i| (*i).clone()).collect();
    expected.sort();
    assert_eq!(deferred, expected, "the busy ones were reported deferred");
    for id in &held {
        assert_eq!(a.lookup(id).unwrap().owner, a.node_id(), "{id} waits");
        let c = Careful::handle(&b, (*id).clone());
        assert_eq!(c.add(1).await.unwrap(), 6, "it serves meanwhile");
        c.set_busy(false).await.unwrap();
    }
    until("the ready ones moved", || {
        held.iter()
            .all(|i| a.lookup(i).is_some_and(|c| c.owner == b.node_id()))
    })
    .await;
    for id in &held {
        assert_eq!(
            Careful::handle(&a, (*id).clone()).add(1).await.unwrap(),
            7,
            "with its state"
        );
    }
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// A before-stop handler refuses the stops it must, with a reason the caller gets, and
/// lets the others through; cancelled, it refuses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_stop_handlers_refuse_with_a_reason() {
    let hubs = cluster("hooks-before-stop", 2).await;
    for id in ["keep-1", "drop-1"] {
        Tally::start(&hubs[0], id, Tally::default()).await.unwrap();
    }
    let guard = hubs[1].hooks().before_stop::<Tally>(0, |id| {
        if id.starts_with("keep-") {
            Err(format!("{id} holds open orders"))
        } else {
            Ok(())
        }
    });
    match Tally::stop(&hubs[1], "keep-1").await {
        Err(StopError::Refused { id, reason }) => {
            assert_eq!(
                (id.as_str(), reason.as_str()),
                ("keep-1", "keep-1 holds open orders")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Tally::handle(&hubs[1], "keep-1").add(1).await.unwrap(),
        1,
        "still runs"
    );
    Tally::stop(&hubs[1], "drop-1").await.unwrap();
    // Only the hub it was registered on asks it.
    assert!(!hubs[0].hooks().cancel(guard));
    assert!(hubs[1].hooks().cancel(guard));
    Tally::stop(&hubs[1], "keep-1").await.unwrap();
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}
