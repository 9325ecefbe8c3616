//! Metadata and tags: given at start (or by a before-start hook), kept in the registry
//! of every node, queried by tag, updated from any node, and kept through moves and
//! a failover.

mod common;

use std::time::Duration;

use common::*;
use processhub::prelude::*;
use processhub::{Metadata, StartOptions, MAX_METADATA};

/// Whether every hub's registry says `id` has `metadata`.
fn everywhere(hubs: &[Hub], id: &str, metadata: &Metadata) -> bool {
    hubs.iter().all(|h| {
        h.lookup(id)
            .is_some_and(|c| !c.pending && c.metadata() == metadata)
    })
}

fn tagged(hub: &Hub, tag: &str) -> Vec<String> {
    hub.query_tag(tag)
        .into_iter()
        .map(|c| c.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_tags_reach_every_node_are_queried_updated_and_survive_moves_and_a_death() {
    let mut hubs = cluster("metadata", 3).await;
    let eu = Metadata::new().with("team", "billing").tagged("region:eu");
    let us = Metadata::new().with("team", "search").tagged("region:us");
    let eu_ids: Vec<String> = (0..20).map(|i| format!("eu-{i:02}")).collect();
    let us_ids: Vec<String> = (0..10).map(|i| format!("us-{i:02}")).collect();
    for r in Tally::start_many_with(
        &hubs[0],
        eu_ids
            .iter()
            .map(|i| (i.clone(), Tally::default()))
            .collect(),
        StartOptions::new().metadata(eu.clone()),
    )
    .await
    {
        r.unwrap();
    }
    for r in Tally::start_many_with(
        &hubs[1],
        us_ids
            .iter()
            .map(|i| (i.clone(), Tally::default()))
            .collect(),
        StartOptions::new().metadata(us.clone()),
    )
    .await
    {
        r.unwrap();
    }
    // Untagged children have no metadata, and no tag finds them.
    Tally::start(&hubs[2], "plain", Tally::default())
        .await
        .unwrap();
    wait_until(
        "every node has every child's metadata",
        Duration::from_secs(10),
        || async {
            eu_ids.iter().all(|id| everywhere(&hubs, id, &eu))
                && us_ids.iter().all(|id| everywhere(&hubs, id, &us))
                && everywhere(&hubs, "plain", &Metadata::new())
        },
    )
    .await;
    for h in &hubs {
        assert_eq!(tagged(h, "region:eu"), eu_ids, "{}", h.node_id());
        assert_eq!(tagged(h, "region:us"), us_ids);
        assert!(tagged(h, "region:mars").is_empty());
        assert_eq!(
            h.lookup("eu-03").unwrap().metadata().get("team"),
            Some("billing")
        );
    }

    // Updated from a node that does not run it: the owner publishes it everywhere.
    let id = eu_ids
        .iter()
        .find(|id| hubs[0].lookup(id).unwrap().owner != hubs[1].node_id())
        .unwrap()
        .clone();
    let vip = eu.clone().tagged("vip").with("team", "billing-gold");
    hubs[1].update_metadata(&id, vip.clone()).await.unwrap();
    assert_eq!(
        hubs[1].lookup(&id).unwrap().metadata(),
        &vip,
        "seen here when it returns"
    );
    wait_until(
        "the update reaches every node",
        Duration::from_secs(10),
        || async { everywhere(&hubs, &id, &vip) },
    )
    .await;
    for h in &hubs {
        assert_eq!(tagged(h, "vip"), vec![id.clone()]);
    }
    // Calls go on: the update did not touch the child's state or epoch.
    assert_eq!(Tally::handle(&hubs[2], id.clone()).add(1).await.unwrap(), 1);

    // Errors are clear.
    assert!(matches!(
        hubs[0].update_metadata("nobody", Metadata::new()).await,
        Err(CallError::NotFound { .. })
    ));
    let huge = Metadata::new().with("blob", "x".repeat(MAX_METADATA));
    assert!(matches!(
        hubs[0].update_metadata(&id, huge.clone()).await,
        Err(CallError::TooLarge { .. })
    ));
    let refused = Tally::start_with(
        &hubs[0],
        "huge",
        Tally::default(),
        StartOptions::new().metadata(huge),
    )
    .await;
    assert!(
        matches!(refused, Err(StartError::MetadataTooLarge { .. })),
        "{refused:?}"
    );
    assert!(hubs[0].lookup("huge").is_none());

    // A fourth node joins: children move to it, their metadata with them.
    let joiner = hub("metadata", &[hubs[0].listen_addr()]).await;
    hubs.push(joiner);
    wait_members(&hubs, 4).await;
    wait_until(
        "children moved to the joiner",
        Duration::from_secs(20),
        || async { hubs[3].local_children() > 0 },
    )
    .await;
    let all: Vec<(String, Metadata)> = eu_ids
        .iter()
        .filter(|i| **i != id)
        .map(|i| (i.clone(), eu.clone()))
        .chain(us_ids.iter().map(|i| (i.clone(), us.clone())))
        .chain([(id.clone(), vip.clone())])
        .collect();
    wait_until(
        "metadata kept through the moves, on every node",
        Duration::from_secs(20),
        || async { all.iter().all(|(i, m)| everywhere(&hubs, i, m)) },
    )
    .await;
    let on_joiner: Vec<String> = all
        .iter()
        .filter(|(i, _)| hubs[0].lookup(i).unwrap().owner == hubs[3].node_id())
        .map(|(i, _)| i.clone())
        .collect();
    assert!(!on_joiner.is_empty());

    // The joiner dies: its children restart elsewhere from their start state, their
    // metadata with them.
    let dead = hubs[3].node_id();
    hubs[3].kill().await;
    let survivors = &hubs[..3];
    wait_until(
        "restarted elsewhere with their metadata",
        Duration::from_secs(20),
        || async {
            survivors.iter().all(|h| h.nodes().len() == 3)
                && all.iter().all(|(i, m)| {
                    everywhere(survivors, i, m) && survivors[0].lookup(i).unwrap().owner != dead
                })
        },
    )
    .await;
    for h in survivors {
        assert_eq!(tagged(h, "region:eu"), eu_ids);
        assert_eq!(tagged(h, "vip"), vec![id.clone()]);
    }
    for h in survivors {
        h.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_start_hook_sets_metadata_per_child() {
    let hubs = cluster("metadata-hook", 2).await;
    hubs[0].hooks().before_start::<Tally>(0, |start| {
        let shard = start.id().len() % 2;
        start.metadata().add_tag(format!("shard:{shard}"));
        start.metadata().set("by", "hook");
        Ok(())
    });
    let ids = ["a", "bb", "ccc", "dddd"];
    for r in Tally::start_many_with(
        &hubs[0],
        ids.iter()
            .map(|i| (i.to_string(), Tally::default()))
            .collect(),
        StartOptions::new().metadata(Metadata::new().tagged("given")),
    )
    .await
    {
        r.unwrap();
    }
    wait_until("both registries", Duration::from_secs(10), || async {
        hubs.iter().all(|h| h.query_tag("given").len() == 4)
    })
    .await;
    for h in &hubs {
        assert_eq!(tagged(h, "shard:1"), vec!["a", "ccc"]);
        assert_eq!(tagged(h, "shard:0"), vec!["bb", "dddd"]);
        assert_eq!(h.lookup("a").unwrap().metadata().get("by"), Some("hook"));
    }
    // A hook that leaves too much metadata fails the start.
    hubs[0].hooks().before_start::<Tally>(-1, |start| {
        start.metadata().set("blob", "y".repeat(MAX_METADATA));
        Ok(())
    });
    let r = Tally::start(&hubs[0], "eeeee", Tally::default()).await;
    assert!(
        matches!(r, Err(StartError::MetadataTooLarge { .. })),
        "{r:?}"
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}
