//! The admin address: the Prometheus metrics after a scripted scenario, and the cluster
//! page in a real browser (headless Chromium, Debian's `chromium`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use processhub::prelude::*;
use processhub::HubEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `n` hubs of one cluster, each serving its admin address on a free loopback port.
async fn admin_cluster(hub_id: &str, n: usize) -> Vec<Hub> {
    let mut hubs: Vec<Hub> = Vec::new();
    for i in 0..n {
        let seeds: Vec<String> = hubs
            .first()
            .map(|h| h.listen_addr().to_string())
            .into_iter()
            .collect();
        let hub = Hub::builder(hub_id)
            .cluster_key(KEY)
            .listen("127.0.0.1:0")
            .admin_listen("127.0.0.1:0")
            .seeds(seeds)
            .start()
            .await
            .unwrap_or_else(|e| panic!("hub {i} starts: {e}"));
        hubs.push(hub);
    }
    wait_members(&hubs, n).await;
    hubs
}

/// A GET over plain HTTP/1.1: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let raw = String::from_utf8(raw).expect("utf-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the admin server answers")
}

/// The value of the sample `name{labels}` in Prometheus text (labels not given may have
/// any value: the values of every matching sample are added up); `0` when none matches.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("name and value");
        let (metric, found) = match key.split_once('{') {
            Some((m, rest)) => {
                let rest = rest.strip_suffix('}').expect("closed labels");
                let found: BTreeMap<&str, &str> = rest
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label=value");
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                (m, found)
            }
            None => (key, BTreeMap::new()),
        };
        if metric == name && labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            total += value.parse::<f64>().expect("a number");
        }
    }
    total
}

async fn metrics(hub: &Hub) -> String {
    let (status, body) = get(hub.admin_addr().expect("admin address"), "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// The children each node owns, by the registry of `hub`.
fn owned(hub: &Hub) -> BTreeMap<NodeId, usize> {
    let mut by_owner = BTreeMap::new();
    for c in hub.children() {
        *by_owner.entry(c.owner).or_default() += 1;
    }
    by_owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_match_a_scripted_scenario_of_starts_calls_and_a_death() {
    let hubs = admin_cluster("admin-metrics", 3).await;
    let mut events: Vec<_> = hubs.iter().map(|h| h.events()).collect();
    let ids: Vec<String> = (0..30).map(|i| format!("m-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        ids.iter().map(|i| (i.clone(), Tally::default())).collect(),
    )
    .await
    {
        r.unwrap();
    }
    let type_name = hubs[0].lookup(&ids[0]).unwrap().type_name.to_string();
    for id in &ids {
        Tally::handle(&hubs[0], id.clone()).add(1).await.unwrap();
    }
    for id in &ids[..10] {
        Tally::handle(&hubs[1], id.clone()).get().await.unwrap();
    }
    let missing = Tally::handle(&hubs[1], "never-started").get().await;
    assert!(
        matches!(missing, Err(CallError::NotFound { .. })),
        "{missing:?}"
    );
    wait_until(
        "every registry has every child",
        Duration::from_secs(10),
        || async { hubs.iter().all(|h| h.children().len() == ids.len()) },
    )
    .await;

    let t = type_name.as_str();
    let m0 = metrics(&hubs[0]).await;
    assert_eq!(
        sample(
            &m0,
            "processhub_calls_total",
            &[("type", t), ("method", "add"), ("outcome", "ok")]
        ),
        30.0
    );
    assert_eq!(
        sample(
            &m0,
            "processhub_call_duration_seconds_count",
            &[("type", t), ("method", "add")]
        ),
        30.0
    );
    assert_eq!(
        sample(&m0, "processhub_calls_total", &[("method", "get")]),
        0.0,
        "hub 0 made no get"
    );
    let m1 = metrics(&hubs[1]).await;
    assert_eq!(
        sample(
            &m1,
            "processhub_calls_total",
            &[("type", t), ("method", "get"), ("outcome", "ok")]
        ),
        10.0
    );
    assert_eq!(
        sample(
            &m1,
            "processhub_calls_total",
            &[("method", "get"), ("outcome", "not_found")]
        ),
        1.0
    );
    assert_eq!(
        sample(&m1, "processhub_calls_total", &[("method", "add")]),
        0.0,
        "hub 1 made no add"
    );

    let owners = owned(&hubs[0]);
    for h in &hubs {
        let m = metrics(h).await;
        let here = owners.get(&h.node_id()).copied().unwrap_or(0) as f64;
        assert_eq!(sample(&m, "processhub_registry_size", &[]), 30.0);
        assert_eq!(
            sample(&m, "processhub_children", &[("type", t)]),
            here,
            "{}",
            h.node_id()
        );
        assert_eq!(
            sample(&m, "processhub_events_total", &[("event", "child_started")]),
            here
        );
        assert_eq!(sample(&m, "processhub_members", &[("state", "up")]), 3.0);
        assert_eq!(
            sample(&m, "processhub_connections", &[]),
            2.0,
            "{}",
            h.node_id()
        );
    }

    // The death of hub 2: its children are restarted on the others.
    let dead = hubs[2].node_id();
    let lost = owners.get(&dead).copied().unwrap_or(0);
    assert!(lost > 0, "hub 2 ran some of the children");
    hubs[2].kill().await;
    let survivors = &hubs[..2];
    wait_until(
        "the dead node's children run elsewhere",
        Duration::from_secs(20),
        || async {
            survivors.iter().all(|h| {
                h.nodes().len() == 2
                    && ids
                        .iter()
                        .all(|id| h.lookup(id).is_some_and(|c| !c.pending && c.owner != dead))
            })
        },
    )
    .await;
    let mut total = 0.0;
    for (h, rx) in survivors.iter().zip(events.iter_mut()) {
        let mut restarted = 0.0;
        // The dead node was unreachable before it left: the point before a crash-leave.
        let mut seen = Vec::new();
        while let Ok(e) = rx.try_recv() {
            match e {
                HubEvent::ChildRestarted { .. } => restarted += 1.0,
                HubEvent::NodeUnreachable { node } if node == dead => seen.push("unreachable"),
                HubEvent::NodeLeft { node, .. } if node == dead => seen.push("left"),
                _ => {}
            }
        }
        assert_eq!(seen, ["unreachable", "left"], "{}", h.node_id());
        let m = metrics(h).await;
        assert_eq!(
            sample(&m, "processhub_restarts_total", &[("reason", "node_down")]),
            restarted
        );
        assert_eq!(
            sample(
                &m,
                "processhub_events_total",
                &[("event", "child_restarted")]
            ),
            restarted
        );
        assert_eq!(sample(&m, "processhub_members", &[("state", "up")]), 2.0);
        let here = owned(h).get(&h.node_id()).copied().unwrap_or(0) as f64;
        assert_eq!(sample(&m, "processhub_children", &[("type", t)]), here);
        total += restarted;
    }
    assert_eq!(
        total, lost as f64,
        "every child of the dead node restarted once"
    );

    // The JSON the page reads agrees, and bad requests get clear answers.
    let addr = hubs[0].admin_addr().unwrap();
    let (status, body) = get(addr, "/api/cluster").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"children\":30"), "{body}");
    assert_eq!(get(addr, "/api/lookup").await.0, 400);
    assert_eq!(get(addr, "/nothing-here").await.0, 404);
    let (status, body) = get(addr, "/api/lookup?id=m-3").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"found\":true"), "{body}");
    for h in survivors {
        h.shutdown().await.unwrap();
    }
    // A hub that shut down closes its admin address.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_another_node_are_acknowledged_by_their_standbys_word() {
    let mut hubs = admin_cluster("admin-held", 3).await;
    Kept::start(&hubs[0], "l", Kept::default()).await.unwrap();
    wait_until("two standbys", Duration::from_secs(10), || async {
        hubs.iter()
            .all(|h| h.lookup("l").is_some_and(|i| i.standbys.len() == 2))
    })
    .await;
    let owner = hubs[0].lookup("l").unwrap().owner;
    let callers: Vec<Hub> = hubs
        .iter()
        .filter(|h| h.node_id() != owner)
        .cloned()
        .collect();
    // Both other nodes write at once, four callers each: every acknowledgement is
    // recorded.
    let mut tasks = Vec::new();
    for hub in &callers {
        for _ in 0..4 {
            let ledger = Kept::handle(hub, "l");
            tasks.push(tokio::spawn(async move {
                let mut acks = Vec::new();
                for _ in 0..50 {
                    acks.push(ledger.add(1).await.expect("acknowledged"));
                }
                acks
            }));
        }
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    acks.sort_unstable();
    assert_eq!(
        acks,
        (1..=400).collect::<Vec<u64>>(),
        "no two acknowledgements carry one value"
    );
    let mut by_standbys = 0.0;
    for hub in &callers {
        let text = metrics(hub).await;
        let standbys = sample(
            &text,
            "processhub_writes_acknowledged_total",
            &[("by", "standbys")],
        );
        let primary = sample(
            &text,
            "processhub_writes_acknowledged_total",
            &[("by", "primary")],
        );
        assert_eq!(standbys + primary, 200.0, "{text}");
        by_standbys += standbys;
    }
    assert!(
        by_standbys > 0.0,
        "the standbys' word answered none of the 400 writes"
    );
    // Every acknowledged write is on the standbys: the primary dies, one of them
    // is promoted with all 400.
    let dead = hubs.iter().position(|h| h.node_id() == owner).unwrap();
    hubs.remove(dead).kill().await;
    wait_members(&hubs, 2).await;
    wait_until("a promoted primary", Duration::from_secs(10), || async {
        hubs[0]
            .lookup("l")
            .is_some_and(|i| i.owner != owner && !i.pending)
    })
    .await;
    assert_eq!(Kept::handle(&hubs[0], "l").get().await.unwrap(), 400);
    assert_eq!(Kept::handle(&hubs[1], "l").add(1).await.unwrap(), 401);
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// Debian's Chromium, if installed.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("the browser test needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
}

/// Runs headless Chromium on `url` with `args`, killed if it takes over a minute.
async fn browse(url: &str, args: &[String]) -> String {
    let profile = std::env::temp_dir().join(format!("processhub-chromium-{}", std::process::id()));
    let mut cmd = tokio::process::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true)
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finishes within a minute")
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element whose opening tag ends with `marker` (up to the next `<`).
fn text_after<'a>(dom: &'a str, marker: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in the page: {dom}"));
    let rest = &dom[at + marker.len()..];
    &rest[..rest.find('<').unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_page_in_a_browser_shows_the_members_and_their_children() {
    let hubs = admin_cluster("admin-page", 3).await;
    let tallies: Vec<String> = (0..60).map(|i| format!("tally-{i}")).collect();
    let labels: Vec<String> = (0..20).map(|i| format!("label-{i}")).collect();
    for r in Tally::start_many(
        &hubs[0],
        tallies
            .iter()
            .map(|i| (i.clone(), Tally::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    for r in Label::start_many(
        &hubs[1],
        labels
            .iter()
            .map(|i| (i.clone(), Label::default()))
            .collect(),
    )
    .await
    {
        r.unwrap();
    }
    wait_until(
        "every registry has every child",
        Duration::from_secs(10),
        || async { hubs.iter().all(|h| h.children().len() == 80) },
    )
    .await;
    // A fourth node comes and goes: children move to it and back, and the page of
    // hub 0 lists the moves out of it.
    let mut events = hubs[0].events();
    let guest = hub("admin-page", &[hubs[0].listen_addr()]).await;
    wait_until(
        "children moved to the new node",
        Duration::from_secs(20),
        || async { guest.local_children() > 0 },
    )
    .await;
    guest.shutdown().await.unwrap();
    wait_until(
        "the three again, all settled",
        Duration::from_secs(20),
        || async {
            hubs.iter().all(|h| {
                h.nodes().len() == 3
                    && h.children()
                        .iter()
                        .all(|c| !c.pending && c.owner != guest.node_id())
            })
        },
    )
    .await;
    let mut moved = 0;
    while let Ok(e) = events.try_recv() {
        moved += usize::from(matches!(e, HubEvent::ChildMigrated { .. }));
    }
    assert!(moved > 0, "hub 0 moved children to the guest");
    let page = format!("http://{}/?id=tally-7", hubs[0].admin_addr().unwrap());
    let dom = browse(&page, &["--dump-dom".into()]).await;

    assert!(
        dom.contains("data-loaded=\"true\""),
        "the script ran: {dom}"
    );
    assert_eq!(text_after(&dom, "id=\"member-count\">"), "3");
    assert_eq!(text_after(&dom, "id=\"total-children\">"), "80");
    assert_eq!(text_after(&dom, "id=\"hub-id\">"), "admin-page");
    let owners = owned(&hubs[0]);
    for h in &hubs {
        let addr = h.listen_addr();
        let here = owners.get(&h.node_id()).copied().unwrap_or(0);
        let marker = format!("data-node=\"{addr}\" data-children=\"");
        assert_eq!(
            text_after(&dom, &marker).split('"').next().unwrap(),
            here.to_string(),
            "{addr}"
        );
    }
    let tally = hubs[0].lookup("tally-7").unwrap();
    let type_marker = format!(
        "data-type=\"{}\"><td>{}</td><td class=\"num\">",
        tally.type_name, tally.type_name
    );
    assert_eq!(text_after(&dom, &type_marker), "60");
    let listed = text_after(&dom, "data-count=\"").split('"').next().unwrap();
    assert_eq!(
        listed,
        moved.min(100).to_string(),
        "the moves out of hub 0 listed"
    );
    assert!(dom.contains("data-kind=\"move\""), "{dom}");
    // The search box looked up the id in the address.
    assert!(dom.contains("data-found=\"true\""), "{dom}");
    assert_eq!(
        text_after(&dom, "data-field=\"owner\">"),
        tally.owner.to_string()
    );
    assert_eq!(text_after(&dom, "data-field=\"type\">"), &*tally.type_name);

    // A screenshot, kept as an artifact.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("cluster-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(
        &page,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture: {} bytes",
        png.len()
    );
    for h in &hubs {
        h.shutdown().await.unwrap();
    }
}
