//! Shared pieces of the integration tests: a component, cluster helpers, waits.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use processhub::prelude::*;
use tokio::time::Instant;

/// A counter: the component the tests start by the thousand.
#[distributed]
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
pub struct Tally {
    n: u64,
}

#[distributed]
impl Tally {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value, from an async method.
    pub async fn slow_get(&self) -> u64 {
        tokio::task::yield_now().await;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }

    /// The value, after `ms` milliseconds.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.n
    }

    /// Several owned arguments.
    pub fn add_both(&mut self, a: u64, b: u64, note: String) -> String {
        self.n += a + b;
        format!("{note}:{}", self.n)
    }

    /// Panics when asked to, after a change: the change stays.
    pub fn explode(&mut self, really: bool) -> u64 {
        self.n += 1000;
        if really {
            panic!("asked to explode");
        }
        self.n
    }

    /// Local helper, not a call.
    #[distributed(skip)]
    pub fn peek(&self) -> u64 {
        self.n
    }

    fn private_helper(&self) -> u64 {
        self.n
    }
}

/// Another type, to check that types do not mix.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Label {
    text: String,
}

#[distributed]
impl Label {
    /// Sets the text.
    pub fn set(&mut self, text: String) {
        self.text = text;
    }

    /// Returns the text.
    pub fn text(&self) -> String {
        self.text.clone()
    }
}

/// Calls `call` on every id, a round at a time (all ids at once), until `stop` is set;
/// returns the calls acknowledged per id, and the errors seen.
pub fn spawn_load<F, Fut>(
    ids: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    call: F,
) -> tokio::task::JoinHandle<(Vec<u64>, Vec<String>)>
where
    F: Fn(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, CallError>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut acked = vec![0u64; ids.len()];
        let mut errors = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let results = futures::future::join_all(ids.iter().map(|id| call(id.clone()))).await;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(_) => acked[i] += 1,
                    Err(e) => errors.push(format!("{}: {e}", ids[i])),
                }
            }
        }
        (acked, errors)
    })
}

/// Waits until `cond` holds, polling, or panics with `what` at the deadline.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cluster key of the hubs the helpers make.
pub const KEY: &str = "integration-tests-cluster-key";

/// A hub on a free loopback port, with the tests' cluster key.
pub async fn hub(hub_id: &str, seeds: &[std::net::SocketAddr]) -> Hub {
    hub_with(hub_id, seeds, |b| b).await
}

/// [`hub`], its builder passed through `options` before it starts.
pub async fn hub_with(
    hub_id: &str,
    seeds: &[std::net::SocketAddr],
    options: impl Fn(processhub::HubBuilder) -> processhub::HubBuilder,
) -> Hub {
    let builder = Hub::builder(hub_id)
        .cluster_key(KEY)
        .listen("127.0.0.1:0")
        .seeds(seeds.iter().map(|s| s.to_string()));
    options(builder).start().await.expect("hub starts")
}

/// `n` hubs of one cluster, waiting until they all see each other.
pub async fn cluster(hub_id: &str, n: usize) -> Vec<Hub> {
    cluster_with(hub_id, n, |b| b).await
}

/// [`cluster`], each hub's builder passed through `options` before it starts.
pub async fn cluster_with(
    hub_id: &str,
    n: usize,
    options: impl Fn(processhub::HubBuilder) -> processhub::HubBuilder,
) -> Vec<Hub> {
    let first = hub_with(hub_id, &[], &options).await;
    let seed = first.listen_addr();
    let mut hubs = vec![first];
    for _ in 1..n {
        hubs.push(hub_with(hub_id, &[seed], &options).await);
    }
    wait_members(&hubs, n).await;
    hubs
}

/// Whether every hub sees the same owner, epoch and standbys for each of `ids` (no
/// entry pending): the view a promotion is planned from is the same everywhere.
pub fn views_agree(hubs: &[Hub], ids: &[String]) -> bool {
    ids.iter().all(|id| {
        let view = |h: &Hub| {
            h.lookup(id)
                .filter(|i| !i.pending)
                .map(|i| (i.owner, i.epoch, i.standbys))
        };
        let first = view(&hubs[0]);
        first.is_some() && hubs[1..].iter().all(|h| view(h) == first)
    })
}

/// Waits until every hub sees `n` members.
pub async fn wait_members(hubs: &[Hub], n: usize) {
    wait_until(
        "every hub sees every member",
        Duration::from_secs(20),
        || async { hubs.iter().all(|h| h.nodes().len() == n) },
    )
    .await;
}

/// A counter kept on three nodes (`sync`): a write is acknowledged once both standbys
/// hold it.
#[distributed(replicas = 3)]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Kept {
    n: u64,
}

#[distributed]
impl Kept {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// A counter that restarts from its start state when it moves.
#[distributed(migration = "cold")]
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
pub struct ColdTally {
    n: u64,
}

#[distributed]
impl ColdTally {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// A component that counts its handovers with the hooks.
#[distributed]
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
pub struct Traveller {
    left: u32,
    arrived: u32,
}

#[distributed]
impl Traveller {
    /// (handovers out, handovers in).
    pub fn trips(&self) -> (u32, u32) {
        (self.left, self.arrived)
    }

    /// Runs before the state leaves.
    #[on_handover_out]
    fn leaving(&mut self) {
        self.left += 1;
    }

    /// Runs when the state arrives.
    #[on_handover_in]
    fn arriving(&mut self) {
        self.arrived += 1;
    }
}

/// A counter that stays on the node it started on while that node lives.
#[distributed(pinned)]
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
pub struct PinnedTally {
    n: u64,
}

#[distributed]
impl PinnedTally {
    /// Adds and returns the new value.
    pub fn add(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }
}

/// A component with a large state, built up by calls.
#[distributed]
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Blob {
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[distributed]
impl Blob {
    /// Grows the state to `len` bytes of a pattern made from `seed`.
    pub fn fill(&mut self, len: usize, seed: u64) -> usize {
        let mut x = seed | 1;
        self.data = vec![0; len];
        // A word at a time: tests run unoptimized, and this is 64 MiB.
        for chunk in self.data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        self.data.len()
    }

    /// Length and a checksum of the state.
    pub fn digest(&self) -> (usize, u64) {
        (self.data.len(), checksum(&self.data))
    }
}

/// FNV-1a over `data`, a word at a time.
pub fn checksum(data: &[u8]) -> u64 {
    data.chunks(8).fold(0xcbf2_9ce4_8422_2325, |h, c| {
        let mut word = [0u8; 8];
        word[..c.len()].copy_from_slice(c);
        (h ^ u64::from_le_bytes(word)).wrapping_mul(0x100_0000_01b3)
    })
}

mod pki;
#[allow(unused_imports)]
pub use pki::Pki;
