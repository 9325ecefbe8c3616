//! Bad input at the wire: malformed and oversize frames, strangers, unknown types and
//! methods. These speak the protocol by hand, so they live inside the crate.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::core::item::{StartItem, StartOutcome};
use crate::net::auth::{self, ClusterAuth, Nonces};
use crate::net::wire::{decode, encode};
use crate::net::wire::{Call, Frame, Request, Response};
use crate::net::wire::{Stage, Start, StartStaged, Stop};
use crate::prelude::*;

#[distributed]
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Echo {
    calls: u64,
}

#[distributed]
impl Echo {
    /// Returns what it got.
    pub fn echo(&mut self, data: Vec<u8>) -> Vec<u8> {
        self.calls += 1;
        data
    }

    /// Returns `n` bytes.
    pub fn make(&self, n: usize) -> Vec<u8> {
        vec![7; n]
    }

    /// How many echoes it served.
    pub fn count(&self) -> u64 {
        self.calls
    }

    /// Answers after `ms` milliseconds.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

/// The cluster key of the hubs of these tests.
const KEY: &[u8] = b"wire-tests-cluster-key-0123456789";

async fn pair(max_frame: usize) -> (Hub, Hub) {
    let a = Hub::builder("wire")
        .cluster_key(KEY)
        .gossip_interval(Duration::from_millis(50))
        .max_frame_size(max_frame)
        .start()
        .await
        .unwrap();
    let b = Hub::builder("wire")
        .cluster_key(KEY)
        .gossip_interval(Duration::from_millis(50))
        .max_frame_size(max_frame)
        .seeds([a.listen_addr().to_string()])
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(a.nodes().len() == 2
        && b.nodes().len() == 2
        && a.inner.transport.is_connected(b.node_id()))
    {
        assert!(Instant::now() < deadline, "the pair never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (a, b)
}

/// Reads until the peer closes; true if it closed within the deadline.
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

async fn still_serves(hub: &Hub) {
    let id = format!("alive-{}", rand_suffix());
    let e = Echo::start(hub, id.clone(), Echo::default()).await.unwrap();
    assert_eq!(e.echo(vec![1, 2]).await.unwrap(), vec![1, 2]);
    Echo::stop(hub, &id).await.unwrap();
}

/// A request to start one new child, as a node sends it after `hops` forwards.
fn new_start(id: &str, type_name: &str, state: Vec<u8>, hops: u8) -> Request<'static> {
    Request::Start(Start {
        items: vec![StartItem {
            id: id.into(),
            type_name: type_name.into(),
            state,
            epoch: 0,
            start_state: None,
            flags: Default::default(),
            recent: Vec::new(),
            node: None,
            meta: None,
        }],
        hops,
    })
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_frames_close_the_connection() {
    let (a, b) = pair(1024 * 1024).await;
    // Garbage with a valid length prefix.
    let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(
        closed_by_peer(&mut s).await,
        "garbage closes the connection"
    );
    // A length over the limit.
    let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
    s.write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    assert!(
        closed_by_peer(&mut s).await,
        "an oversize frame closes the connection"
    );
    // A request before any hello.
    let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
    let req = encode(&Frame::Request {
        rid: 1,
        req: Request::Stop(Stop {
            id: "x".into(),
            type_name: "y".into(),
        }),
    })
    .unwrap();
    s.write_all(&req).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "no hello, no service");
    still_serves(&a).await;
    still_serves(&b).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_or_a_stale_incarnation_is_refused_and_told_nothing() {
    let (a, b) = pair(1024 * 1024).await;
    let incarnation = a.node_id().incarnation().to_string();
    for (hub_id, to, word) in [
        ("another-hub", a.node_id(), auth::REFUSED_HUB),
        (
            "wire",
            crate::NodeId::new(a.listen_addr(), a.node_id().incarnation() + 1),
            auth::REFUSED_INCARNATION,
        ),
    ] {
        let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
        s.write_all(&hello(hub_id, to, [1; 32])).await.unwrap();
        match decode(&read_frame(&mut s).await).unwrap() {
            Frame::Reject { reason } => {
                assert_eq!(reason, word);
                assert!(!reason.contains(&incarnation), "{reason}");
            }
            other => panic!("expected Reject, got {other:?}"),
        }
        assert!(closed_by_peer(&mut s).await);
    }
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The dialer's `Hello` to `to` as `hub_id`, from a made-up node.
fn hello(hub_id: &str, to: crate::NodeId, nonce: auth::Nonce) -> Vec<u8> {
    encode(&Frame::Hello {
        hub_id: hub_id.into(),
        from: stranger(),
        to,
        nonce,
    })
    .unwrap()
    .to_vec()
}

fn stranger() -> crate::NodeId {
    crate::NodeId::new("127.0.0.1:1".parse().unwrap(), 1)
}

/// A raw client that knows the hub id and the node's identity but not the key: its
/// proof is refused, it gets nothing of the node (no registry, no incarnation in the
/// refusal), its calls, starts, stops and forged registry pushes change nothing, and
/// the node reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_key_gets_nothing_and_changes_nothing() {
    let (a, b) = pair(1024 * 1024).await;
    let mut events = a.events();
    let id = format!("guarded-{}", rand_suffix());
    let h = Echo::start(&a, id.clone(), Echo::default()).await.unwrap();
    h.echo(vec![1]).await.unwrap();
    let type_name = <Echo as crate::child::component::Component>::TYPE_NAME;
    let forged = [
        Frame::Request {
            rid: 1,
            req: Request::Stop(Stop {
                id: id.clone(),
                type_name: type_name.into(),
            }),
        },
        Frame::Request {
            rid: 2,
            req: Request::Call(Call {
                id: id.clone().into(),
                type_name: type_name.into(),
                method: "echo".into(),
                args: postcard::to_allocvec(&(vec![9u8],)).unwrap().into(),
                call_id: 0,
            }),
        },
        Frame::Push(crate::core::registry::Push::Remove(vec![(
            id.clone(),
            u64::MAX,
        )])),
    ];
    for attempt in 0..3 {
        let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
        s.write_all(&hello("wire", a.node_id(), [attempt; 32]))
            .await
            .unwrap();
        let Frame::Challenge { .. } = decode(&read_frame(&mut s).await).unwrap() else {
            panic!("a challenge first");
        };
        match attempt {
            // A made-up proof.
            0 => s
                .write_all(&encode(&Frame::Proof { proof: [7; 32] }).unwrap())
                .await
                .unwrap(),
            // A proof with the wrong key.
            1 => {
                let wrong = ClusterAuth::new(
                    vec![b"not-the-wire-key-0123456789".to_vec()],
                    "wire",
                    Nonces::Os,
                );
                let proof = wrong.prove(
                    0,
                    auth::Side::Dialer,
                    &auth::Transcript {
                        hub_id: "wire",
                        dialer: stranger(),
                        acceptor: a.node_id(),
                        dialer_nonce: &[attempt; 32],
                        acceptor_nonce: &[0; 32],
                    },
                );
                s.write_all(&encode(&Frame::Proof { proof }).unwrap())
                    .await
                    .unwrap();
            }
            // No proof: the frames of a member straight away.
            _ => {
                for (i, f) in forged.iter().enumerate() {
                    let sent = s.write_all(&encode(f).unwrap()).await;
                    // The node closes at the first frame that is not a proof: a later
                    // write may find the connection closed (a broken pipe).
                    assert!(sent.is_ok() || i > 0, "{sent:?}");
                }
            }
        }
        if attempt < 2 {
            match decode(&read_frame(&mut s).await).unwrap() {
                Frame::Reject { reason } => assert_eq!(reason, auth::REFUSED_KEY),
                other => panic!("expected Reject, got {other:?}"),
            }
            // Whatever it sends now is not read.
            for f in &forged {
                let _ = s.write_all(&encode(f).unwrap()).await;
            }
        }
        assert!(
            closed_by_peer(&mut s).await,
            "closed, and nothing else sent"
        );
    }
    // Reported (twice: the made-up proof and the wrong key).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reported = 0;
    while reported < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(HubEvent::Unauthenticated { dialed: false, .. })) => reported += 1,
            Ok(Ok(_)) => {}
            other => panic!("{reported} reports, then {other:?}"),
        }
    }
    // Nothing changed: the child runs where it did, with the one echo it had.
    assert_eq!(h.count().await.unwrap(), 1);
    assert!(a.lookup(&id).is_some() && b.lookup(&id).is_some());
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Connections that never finish their handshake hold a slot each, at most
/// `MAX_HANDSHAKES_PER_IP` from one address: one more is closed at once, the node goes
/// on serving, and the slots come back when those connections end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_per_address_limit_are_closed_at_once() {
    use crate::net::transport::MAX_HANDSHAKES_PER_IP;
    let (a, b) = pair(1024 * 1024).await;
    let mut idle = Vec::new();
    for _ in 0..MAX_HANDSHAKES_PER_IP {
        idle.push(TcpStream::connect(a.listen_addr()).await.unwrap());
    }
    let mut extra = TcpStream::connect(a.listen_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "one more is closed at once: {closed:?}"
    );
    let waiting = tokio::time::timeout(Duration::from_millis(200), idle[0].read(&mut buf)).await;
    assert!(waiting.is_err(), "the first ones wait for their hello");
    still_serves(&a).await;
    drop(idle);
    // The slots come back: a peer with the key gets through again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
        s.write_all(&hello("wire", a.node_id(), [9; 32]))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), read_frame_or_close(&mut s)).await {
            Ok(Some(body)) => {
                assert!(matches!(decode(&body).unwrap(), Frame::Challenge { .. }));
                break;
            }
            _ => assert!(Instant::now() < deadline, "the slots never came back"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The next frame's body, or `None` if the peer closed first.
async fn read_frame_or_close(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Before the key is proven, a frame over the handshake's small limit closes the
/// connection: an unauthenticated peer cannot make the node buffer megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_before_the_handshake_closes_the_connection() {
    let (a, b) = pair(1024 * 1024).await;
    let mut s = TcpStream::connect(a.listen_addr()).await.unwrap();
    let len = crate::net::link::HANDSHAKE_LIMIT as u32 + 1;
    s.write_all(&len.to_be_bytes()).await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_methods_get_error_replies() {
    let (a, b) = pair(1024 * 1024).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = a
        .inner
        .transport
        .request(b.node_id(), new_start("x", "no::Such", vec![], 3), deadline)
        .await
        .unwrap();
    match resp {
        Response::Started(o) => {
            assert_eq!(o, vec![StartOutcome::UnknownType { node: b.node_id() }])
        }
        other => panic!("{other:?}"),
    }

    Echo::start(&a, "e", Echo::default()).await.unwrap();
    let owner = a.lookup("e").unwrap().owner;
    let (caller, _) = if owner == a.node_id() {
        (&b, &a)
    } else {
        (&a, &b)
    };
    for (method, args) in [("nope", vec![]), ("echo", vec![0xff, 0xff, 0xff])] {
        let resp = caller
            .inner
            .transport
            .request(
                owner,
                Request::Call(Call {
                    id: "e".into(),
                    type_name: <Echo as crate::child::component::Component>::TYPE_NAME.into(),
                    method: method.into(),
                    args: args.into(),
                    call_id: 0,
                }),
                deadline,
            )
            .await
            .unwrap();
        match (method, resp) {
            ("nope", Response::Reply(Err(CallError::UnknownMethod { method, .. }))) => {
                assert_eq!(method, "nope")
            }
            ("echo", Response::Reply(Err(CallError::Codec { .. }))) => {}
            (m, other) => panic!("{m}: {other:?}"),
        }
    }
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_calls_and_replies_are_errors_not_hangs() {
    let (a, b) = pair(64 * 1024).await;
    Echo::start(&a, "big", Echo::default()).await.unwrap();
    for hub in [&a, &b] {
        let e = Echo::handle(hub, "big");
        match e.echo(vec![0; 100 * 1024]).await {
            // Local calls need no frame; remote ones are refused before sending.
            Ok(v) => assert_eq!(v.len(), 100 * 1024),
            Err(CallError::TooLarge { size, max }) => assert!(size > max && max == 64 * 1024),
            Err(other) => panic!("{other:?}"),
        }
        match e.make(100 * 1024).await {
            Ok(v) => assert_eq!(v.len(), 100 * 1024),
            Err(CallError::TooLarge { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
        // The connection still works.
        assert_eq!(e.echo(vec![1]).await.unwrap(), vec![1]);
    }
    let owner = a.lookup("big").unwrap().owner;
    let remote = if owner == a.node_id() { &b } else { &a };
    assert!(matches!(
        Echo::handle(remote, "big").echo(vec![0; 100 * 1024]).await,
        Err(CallError::TooLarge { .. })
    ));
    assert!(matches!(
        Echo::handle(remote, "big").make(100 * 1024).await,
        Err(CallError::TooLarge { .. })
    ));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_fails_rolls_back_with_the_state() {
    let hub = Hub::builder("rollback")
        .call_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let e = Echo::start(&hub, "stays", Echo::default()).await.unwrap();
    e.echo(vec![1]).await.unwrap();
    e.echo(vec![2]).await.unwrap();
    let mut events = hub.events();
    // A node that does not exist: the start there never answers.
    let nowhere = crate::NodeId::new("127.0.0.1:9".parse().unwrap(), 1);
    let (moved, failed) = std::sync::Arc::clone(&hub.inner)
        .move_children(vec![("stays".into(), nowhere, 2)])
        .await;
    assert_eq!((moved, failed), (0, 1));
    assert_eq!(hub.lookup("stays").unwrap().owner, hub.node_id());
    // The start never went out (no connection): the epoch stays.
    assert_eq!(hub.lookup("stays").unwrap().epoch, 1);
    // Still here, with its state: two calls so far, this is the third.
    assert_eq!(e.count().await.unwrap(), 2);
    assert_eq!(
        events.try_recv().ok(),
        Some(HubEvent::RedistributionStarted { children: 1 })
    );
    match events.try_recv() {
        Ok(HubEvent::MigrationFailed { id, to, .. }) => {
            assert_eq!((id.as_str(), to), ("stays", nowhere))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events.try_recv().ok(),
        Some(HubEvent::RedistributionCompleted {
            moved: 0,
            failed: 1
        })
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_sent_to_a_node_that_does_not_own_the_id_is_forwarded_to_its_owner() {
    let a = Hub::builder("forward").start().await.unwrap();
    let seed = [a.listen_addr().to_string()];
    let b = Hub::builder("forward")
        .seeds(seed.clone())
        .start()
        .await
        .unwrap();
    let c = Hub::builder("forward").seeds(seed).start().await.unwrap();
    let hubs = [a.clone(), b.clone(), c.clone()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !hubs.iter().all(|h| h.nodes().len() == 3) {
        assert!(Instant::now() < deadline, "the cluster never formed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An id that c owns, sent to b as if the sender's view were stale.
    let id = (0..)
        .map(|i| format!("fwd-{i}"))
        .find(|id| a.ring_owner(id) == Some(c.node_id()))
        .unwrap();
    let state = postcard::to_allocvec(&Echo::default()).unwrap();
    let echo = <Echo as crate::child::component::Component>::TYPE_NAME;
    let resp = a
        .inner
        .transport
        .request(
            b.node_id(),
            new_start(&id, echo, state, 0),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .unwrap();
    match resp {
        Response::Started(o) => assert!(
            matches!(o[..], [StartOutcome::Started { node, epoch: 1 }] if node == c.node_id()),
            "{o:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.local_children(), 1);
    assert_eq!(b.local_children(), 0);
    for h in hubs {
        h.shutdown().await.unwrap();
    }
}

/// Frames written by a hand-made peer that holds the key and proved it to `hub`.
async fn fake_peer(hub: &Hub) -> TcpStream {
    let mut s = TcpStream::connect(hub.listen_addr()).await.unwrap();
    let keys = ClusterAuth::new(vec![KEY.to_vec()], "wire", Nonces::Os);
    let nonce = keys.nonce();
    s.write_all(&hello("wire", hub.node_id(), nonce))
        .await
        .unwrap();
    let Frame::Challenge {
        nonce: theirs,
        proof,
    } = decode(&read_frame(&mut s).await).unwrap()
    else {
        panic!("expected a challenge");
    };
    let t = auth::Transcript {
        hub_id: "wire",
        dialer: stranger(),
        acceptor: hub.node_id(),
        dialer_nonce: &nonce,
        acceptor_nonce: &theirs,
    };
    assert_eq!(keys.verify(auth::Side::Acceptor, &t, &proof), Some(0));
    let proof = keys.prove(0, auth::Side::Dialer, &t);
    s.write_all(&encode(&Frame::Proof { proof }).unwrap())
        .await
        .unwrap();
    loop {
        let body = read_frame(&mut s).await;
        match decode(&body).unwrap() {
            Frame::Welcome { .. } => return s,
            Frame::Push(_) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len))
        .await
        .expect("a frame in time")
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_arriving_together_are_answered_each_in_order_per_child() {
    let (a, b) = pair(1024 * 1024).await;
    let x = format!("batch-x-{}", rand_suffix());
    let y = format!("batch-y-{}", rand_suffix());
    Echo::start(&a, x.clone(), Echo::default()).await.unwrap();
    Echo::start(&a, y.clone(), Echo::default()).await.unwrap();
    // Wherever the ring put them, ask the node that runs them.
    let owner = |id: &str| a.lookup(id).unwrap().owner;
    let target = if owner(&x) == a.node_id() { &a } else { &b };
    let type_name = <Echo as crate::child::component::Component>::TYPE_NAME;
    let call = |rid: u64, id: &str, type_name: &str, method: &str, args: Vec<u8>| {
        encode(&Frame::Request {
            rid,
            req: Request::Call(Call {
                id: id.to_string().into(),
                type_name: type_name.to_string().into(),
                method: method.to_string().into(),
                args: args.into(),
                call_id: 0,
            }),
        })
        .unwrap()
    };
    let echo_args = |v: &[u8]| postcard::to_allocvec(&(v.to_vec(),)).unwrap();
    let unit = postcard::to_allocvec(&()).unwrap();
    let mut batch = Vec::new();
    for rid in 1..=3 {
        batch.extend_from_slice(&call(rid, &x, type_name, "echo", echo_args(&[rid as u8])));
    }
    batch.extend_from_slice(&call(4, &x, type_name, "count", unit.clone()));
    batch.extend_from_slice(&call(5, "no-such-child", type_name, "count", unit.clone()));
    batch.extend_from_slice(&call(6, &x, "other::Type", "count", unit.clone()));
    batch.extend_from_slice(&call(7, &x, type_name, "no_such_method", unit.clone()));
    batch.extend_from_slice(&call(8, &x, type_name, "echo", vec![0xff, 0xff]));
    batch.extend_from_slice(&call(9, &y, type_name, "count", unit.clone()));
    batch.extend_from_slice(&call(10, &x, type_name, "count", unit.clone()));

    let mut s = fake_peer(target).await;
    // One write: the hub reads them together and serves them as batches.
    s.write_all(&batch).await.unwrap();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 10 {
        let body = read_frame(&mut s).await;
        if let Frame::Response { rid, resp } = decode(&body).unwrap() {
            assert!(
                replies.insert(rid, resp).is_none(),
                "one response per request"
            );
        }
    }
    let ok = |rid: u64| match &replies[&rid] {
        Response::Reply(Ok(bytes)) => bytes.to_vec(),
        other => panic!("call {rid}: expected a reply, got {other:?}"),
    };
    for rid in 1..=3u64 {
        let echoed: Vec<u8> = postcard::from_bytes(&ok(rid)).unwrap();
        assert_eq!(echoed, vec![rid as u8]);
    }
    // The count comes after the three echoes of the same batch, never before.
    assert_eq!(postcard::from_bytes::<u64>(&ok(4)).unwrap(), 3);
    if owner(&x) == owner(&y) {
        assert_eq!(postcard::from_bytes::<u64>(&ok(9)).unwrap(), 0);
    } else {
        assert!(matches!(replies[&9], Response::NotHere { owner: o } if o == owner(&y)));
    }
    assert!(matches!(
        &replies[&5],
        Response::Reply(Err(CallError::NotFound { .. }))
    ));
    assert!(matches!(
        &replies[&6],
        Response::Reply(Err(CallError::WrongType { .. }))
    ));
    assert!(matches!(
        &replies[&7],
        Response::Reply(Err(CallError::UnknownMethod { .. }))
    ));
    assert!(matches!(
        &replies[&8],
        Response::Reply(Err(CallError::Codec { .. }))
    ));
    // A failed call in a batch does not stop the ones after it.
    assert_eq!(postcard::from_bytes::<u64>(&ok(10)).unwrap(), 3);
    drop(s);
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parts_of_a_big_state_are_refused_with_a_reason() {
    let (a, b) = pair(1024 * 1024).await;
    let mut s = fake_peer(&a).await;
    let send = |rid: u64, req: Request<'static>| encode(&Frame::Request { rid, req }).unwrap();
    let mut out = Vec::new();
    // A part that does not start at 0, one over the size limit, a start of a transfer
    // never sent, and a start of one left incomplete.
    out.extend_from_slice(&send(
        1,
        Request::Stage(Stage {
            transfer: 1,
            offset: 5,
            total: 10,
            data: vec![0; 5].into(),
        }),
    ));
    out.extend_from_slice(&send(
        2,
        Request::Stage(Stage {
            transfer: 2,
            offset: 0,
            total: u64::MAX,
            data: vec![0; 5].into(),
        }),
    ));
    out.extend_from_slice(&send(
        3,
        Request::StartStaged(StartStaged {
            transfer: 3,
            hops: 3,
        }),
    ));
    out.extend_from_slice(&send(
        4,
        Request::Stage(Stage {
            transfer: 4,
            offset: 0,
            total: 10,
            data: vec![0; 5].into(),
        }),
    ));
    out.extend_from_slice(&send(
        5,
        Request::StartStaged(StartStaged {
            transfer: 4,
            hops: 3,
        }),
    ));
    s.write_all(&out).await.unwrap();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < 5 {
        let body = read_frame(&mut s).await;
        if let Frame::Response { rid, resp } = decode(&body).unwrap() {
            replies.insert(rid, resp);
        }
    }
    for rid in [1, 2, 3, 5] {
        assert!(
            matches!(&replies[&rid], Response::Staged(Err(m)) if !m.is_empty()),
            "{rid}: {:?}",
            replies[&rid]
        );
    }
    assert!(matches!(replies[&4], Response::Staged(Ok(()))));
    drop(s);
    still_serves(&a).await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// A peer that sends far more requests than the in-flight limit at once: they are all
/// answered, none refused, while no more than the limit are served at a time (the rest
/// wait unread); a lease renewal sent behind them is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_limit_wait_and_are_all_answered() {
    let hub = Hub::builder("wire")
        .cluster_key(KEY)
        .max_requests_in_flight(8)
        .start()
        .await
        .unwrap();
    let id = format!("nap-{}", rand_suffix());
    Echo::start(&hub, id.clone(), Echo::default())
        .await
        .unwrap();
    let type_name = <Echo as crate::child::component::Component>::TYPE_NAME;
    let mut s = fake_peer(&hub).await;
    let calls = 200u64;
    let mut batch = Vec::new();
    for rid in 1..=calls {
        batch.extend_from_slice(
            &encode(&Frame::Request {
                rid,
                req: Request::Call(Call {
                    id: id.clone().into(),
                    type_name: type_name.into(),
                    method: "nap".into(),
                    args: postcard::to_allocvec(&(2u64,)).unwrap().into(),
                    call_id: 0,
                }),
            })
            .unwrap(),
        );
    }
    let lease_rid = calls + 1;
    batch.extend_from_slice(
        &encode(&Frame::Request {
            rid: lease_rid,
            req: Request::Lease(crate::net::wire::LeaseAsk {}),
        })
        .unwrap(),
    );
    // Watch how many are served at once while they run.
    let watched = hub.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = done.clone();
    let most = tokio::spawn(async move {
        let mut most = 0;
        while !watching.load(std::sync::atomic::Ordering::Relaxed) {
            for c in watched.inner.transport.connections() {
                most = most.max(c.serving());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        most
    });
    s.write_all(&batch).await.unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut lease_after = None;
    while answered.len() < calls as usize + 1 {
        if let Frame::Response { rid, resp } = decode(&read_frame(&mut s).await).unwrap() {
            match resp {
                Response::Reply(Ok(_)) => {}
                Response::Lease { .. } if rid == lease_rid => lease_after = Some(answered.len()),
                other => panic!("request {rid}: {other:?}"),
            }
            assert!(answered.insert(rid), "one response per request");
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = most.await.unwrap();
    assert!(most <= 8, "at most the limit served at once, saw {most}");
    assert!(most >= 1, "the watcher saw them served");
    let lease_after = lease_after.expect("the lease renewal was answered");
    assert!(
        lease_after < calls as usize / 2,
        "the lease renewal did not wait behind the calls (answered after {lease_after})"
    );
    drop(s);
    still_serves(&hub).await;
    hub.shutdown().await.unwrap();
}

/// A batch of calls sent together is served by one actor message, and its replies go
/// together after the last call. The lease is confirmed once more then: a lease lost
/// while the batch ran (here, the node downed) answers none of its calls, not even the
/// one that ran before it was lost and was confirmed after it (the fencing a reply of
/// its own would have had at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_lease_is_lost_while_it_runs_acknowledges_none_of_it() {
    use crate::child::erased::{ChildCtx, Responder};
    use crate::child::lease::Lease;
    use crate::core::downing::{PartitionTolerance, SafetyConfig};
    use crate::core::entry::EpochCell;
    use crate::net::wire::EncodedCall;
    use std::sync::Arc;

    let lease = Arc::new(Lease::new(SafetyConfig {
        strategy: PartitionTolerance::MajorityQuorum,
        stable_after: Duration::from_millis(300),
        lease: Duration::from_secs(60),
    }));
    lease.renewed(Instant::now());
    let node = NodeId::new("127.0.0.1:1".parse().unwrap(), 1);
    let ctx = ChildCtx {
        id: Arc::from("batch"),
        node,
        epoch: EpochCell::new(1),
        events: crate::hooks::Events::new(16, crate::telemetry::Telemetry::new(false)),
        replicator: None,
        role: None,
        recent: None,
        awake: None,
        lease: Some(Arc::clone(&lease)),
    };
    let child = crate::child::life::spawn_typed(Echo::default(), ctx);
    let call = |method: &'static str, args: Vec<u8>| EncodedCall {
        method: bytes::Bytes::from_static(method.as_bytes()),
        args: bytes::Bytes::from(args),
        call_id: 0,
        trace: None,
    };
    let run = |calls: Vec<EncodedCall>| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let respond = Responder::new(move |replies| {
            let _ = tx.send(replies);
        });
        tokio::spawn(Arc::clone(&child).call_batch(node, calls, respond));
        rx
    };
    let echo = postcard::to_allocvec(&(vec![7u8],)).unwrap();
    let nap = postcard::to_allocvec(&(300u64,)).unwrap();

    // Under a lease: both answered.
    let replies = run(vec![call("echo", echo.clone()), call("nap", nap.clone())])
        .await
        .unwrap()
        .expect("served");
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");

    // The echo runs at once, the nap for 300 ms; the node is downed meanwhile.
    let replies = run(vec![call("echo", echo), call("nap", nap)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    lease.revoke();
    let replies = replies.await.unwrap().expect("served");
    assert_eq!(
        replies,
        vec![Err(CallError::NoQuorum), Err(CallError::NoQuorum)],
        "no reply of the batch goes without a lease"
    );
}
