//! The admin address ([`HubBuilder::admin_listen`](crate::HubBuilder::admin_listen)):
//! an HTTP server on the hub's own runtime (hyper, HTTP/1.1) that serves
//!
//! | path | what |
//! |---|---|
//! | `/` | the live cluster page (one HTML file with its script, no other server) |
//! | `/metrics` | this hub's metrics, Prometheus text format |
//! | `/api/cluster` | what the page shows, as JSON: members, ring shares, children per node and type, recent moves, restarts and promotions |
//! | `/api/lookup?id=ID` | one child: its registry entry and [`Hub::explain`]'s reason |
//!
//! Everything is read from this node's registry and view: the page of any member shows
//! the whole cluster. It listens until the hub shuts down or is killed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Weak;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, HubInner};
use crate::telemetry::{Gauges, Recent};

/// The cluster page.
const PAGE: &str = include_str!("page.html");

/// How many keys are placed to measure each member's share of the ring.
const SHARE_PROBES: usize = 4096;

/// The running admin server of a hub.
#[derive(Debug)]
pub(crate) struct Admin {
    pub(crate) addr: SocketAddr,
    stop: CancellationToken,
}

impl Admin {
    /// Serves `listener` for the hub behind `hub` until [`Admin::stop`].
    pub(crate) fn start(listener: TcpListener, hub: Weak<HubInner>) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, hub, stop.clone()));
        Ok(Self { addr, stop })
    }

    /// Stops listening (connections being served finish their request).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, hub: Weak<HubInner>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // the listener itself is fine.
                    tracing::debug!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(respond(&hub, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // (On stop, the connection is dropped: closed.)
            tokio::select! {
                served = conn => {
                    if let Err(e) = served {
                        tracing::debug!("admin connection: {e}");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn respond<B>(hub: &Weak<HubInner>, req: &Request<B>) -> Response<Full<Bytes>> {
    let Some(inner) = hub.upgrade() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the hub has stopped\n");
    };
    let hub = Hub { inner };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(hyper::header::ALLOW, "GET, HEAD".parse().unwrap());
        return r;
    }
    match req.uri().path() {
        "/" | "/index.html" => body(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
        "/metrics" => {
            let telemetry = hub.inner.events.telemetry();
            telemetry.refresh(&gauges(&hub));
            match telemetry.render() {
                Some(page) => body(StatusCode::OK, "text/plain; version=0.0.4", page),
                None => text(StatusCode::NOT_FOUND, "no metrics recorder\n"),
            }
        }
        "/api/cluster" => json(&cluster(&hub)),
        "/api/lookup" => {
            let id = req.uri().query().and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "id")
                    .map(|(_, v)| v.into_owned())
            });
            match id {
                Some(id) if !id.is_empty() => json(&lookup(&hub, &id)),
                _ => text(
                    StatusCode::BAD_REQUEST,
                    "give the child id: /api/lookup?id=ID\n",
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn body(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(hyper::header::CONTENT_TYPE, content_type.parse().unwrap());
    headers.insert(hyper::header::CACHE_CONTROL, "no-store".parse().unwrap());
    r
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", message.into())
}

fn json(value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(value) {
        Ok(s) => body(StatusCode::OK, "application/json", s),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

/// The gauges' values now.
pub(crate) fn gauges(hub: &Hub) -> Gauges {
    let inner = &hub.inner;
    let e = inner.engine.read().unwrap();
    // Every type linked in (so that one whose last child went shows 0), counted by
    // the names the registry holds: no allocation per child.
    let mut children: BTreeMap<&str, usize> = crate::child::types::COMPONENTS
        .iter()
        .map(|c| (c.type_name, 0))
        .collect();
    let mut awake = 0;
    for (id, local) in e.local.iter() {
        if let Some(entry) = e.registry.get(id) {
            *children.entry(&entry.type_name).or_default() += 1;
        }
        awake += usize::from(local.child.is_active());
    }
    let members = e.view.members();
    let up = members.iter().filter(|n| e.view.is_alive(**n)).count();
    Gauges {
        registry: e.registry.len(),
        children: children
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect(),
        awake,
        up,
        unreachable: members.len() - up,
        connections: inner.transport.connections().len(),
        hook_queue: inner.events.hook_queue_depth(),
    }
}

/// What the cluster page shows.
#[derive(Debug, Serialize)]
pub(crate) struct Cluster {
    hub_id: String,
    /// The node serving the page.
    node: String,
    /// Whether that node is on a side without a quorum.
    partitioned: bool,
    members: Vec<Member>,
    /// Children in the registry, all nodes.
    children: usize,
    /// Per type, all nodes.
    types: BTreeMap<String, usize>,
    recent: Vec<Recent>,
}

/// One member, as the page shows it.
#[derive(Debug, Serialize)]
struct Member {
    /// Its address.
    addr: String,
    /// Its id (address and incarnation).
    node: String,
    /// `up`, `unreachable` or `draining`.
    state: &'static str,
    /// Whether it is the node serving the page.
    this: bool,
    /// The share of new ids the ring gives it (0 when off the ring).
    ring_share: f64,
    /// Children running on it (registry owner).
    children: usize,
    /// Those, per type.
    by_type: BTreeMap<String, usize>,
}

fn cluster(hub: &Hub) -> Cluster {
    let me = hub.node_id();
    // Under the engine's read lock: the view, and one pass over the registry counting by
    // the names it holds (no allocation per entry).
    let (ring, states, per_node, types, children, partitioned) = {
        let e = hub.inner.engine.read().unwrap();
        let states: Vec<(crate::NodeId, &'static str)> = e
            .view
            .members()
            .iter()
            .map(|&n| {
                let state = if !e.view.is_alive(n) {
                    "unreachable"
                } else if e.view.is_draining(n) {
                    "draining"
                } else {
                    "up"
                };
                (n, state)
            })
            .collect();
        let mut per_node: BTreeMap<crate::NodeId, BTreeMap<&str, usize>> = BTreeMap::new();
        let mut types: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, entry) in e.registry.iter() {
            *per_node
                .entry(entry.owner)
                .or_default()
                .entry(&entry.type_name)
                .or_default() += 1;
            *types.entry(&entry.type_name).or_default() += 1;
        }
        let owned = |m: BTreeMap<&str, usize>| -> BTreeMap<String, usize> {
            m.into_iter().map(|(t, n)| (t.to_string(), n)).collect()
        };
        let per_node: BTreeMap<crate::NodeId, BTreeMap<String, usize>> =
            per_node.into_iter().map(|(n, m)| (n, owned(m))).collect();
        (
            std::sync::Arc::clone(e.view.ring()),
            states,
            per_node,
            owned(types),
            e.registry.len(),
            !e.has_quorum(),
        )
    };
    // Each member's share of the ring, measured by placing probe keys (off the lock).
    let mut shares: BTreeMap<crate::NodeId, usize> = BTreeMap::new();
    for i in 0..SHARE_PROBES {
        if let Some(owner) = ring.owner(&format!("share-probe-{i}")) {
            *shares.entry(owner).or_default() += 1;
        }
    }
    let mut per_node = per_node;
    let members = states
        .into_iter()
        .map(|(n, state)| {
            let by_type = per_node.remove(&n).unwrap_or_default();
            Member {
                addr: n.addr().to_string(),
                node: n.to_string(),
                state,
                this: n == me,
                ring_share: shares.get(&n).copied().unwrap_or(0) as f64 / SHARE_PROBES as f64,
                children: by_type.values().sum(),
                by_type,
            }
        })
        .collect();
    Cluster {
        hub_id: hub.hub_id().to_string(),
        node: me.to_string(),
        partitioned,
        members,
        children,
        types,
        recent: hub.inner.events.telemetry().recent(),
    }
}

/// One child, as the page's search shows it.
#[derive(Debug, Serialize)]
struct Lookup {
    id: String,
    found: bool,
    /// Where a start of it would go now.
    ring_owner: Option<String>,
    type_name: Option<String>,
    owner: Option<String>,
    standbys: Vec<String>,
    epoch: Option<u64>,
    pending: bool,
    pinned: bool,
    distribution: Option<String>,
    reason: Option<String>,
}

fn lookup(hub: &Hub, id: &str) -> Lookup {
    let ring_owner = hub.ring_owner(id).map(|n| n.to_string());
    match hub.explain(id) {
        Some(x) => Lookup {
            id: id.to_string(),
            found: true,
            ring_owner,
            type_name: Some(x.type_name),
            owner: Some(x.owner.to_string()),
            standbys: x.standbys.iter().map(ToString::to_string).collect(),
            epoch: Some(x.epoch),
            pending: x.pending,
            pinned: x.pinned,
            distribution: Some(x.distribution.to_string()),
            reason: Some(x.reason),
        },
        None => Lookup {
            id: id.to_string(),
            found: false,
            ring_owner,
            type_name: None,
            owner: None,
            standbys: Vec::new(),
            epoch: None,
            pending: false,
            pinned: false,
            distribution: None,
            reason: None,
        },
    }
}
