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
