//! Who may connect: the cluster key and the handshake's challenge-response.
//!
//! ```text
//!  dialer                                         acceptor
//!  Hello { hub id, from, to, nonce_d }      ──►   hub id and incarnation checked
//!                                           ◄──   Challenge { nonce_a, proof_a }
//!  proof_a checked against every key held
//!  Proof { proof_d }                        ──►   proof_d checked against every key held
//!                                           ◄──   Welcome { node }
//!  proof_x = HMAC-SHA256(key, role ‖ hub id ‖ dialer ‖ acceptor ‖ nonce_d ‖ nonce_a)
//! ```
//!
//! Each side proves it holds a cluster key over both fresh nonces and both node
//! identities, so a proof cannot be replayed on another connection, reflected to its
//! sender (the role is part of it), or moved to another node's identity. Proofs are
//! compared in constant time (`hmac`'s `verify_slice`). Until the dialer's proof is
//! checked, the acceptor reads nothing but frames of at most
//! [`HANDSHAKE_LIMIT`](crate::net::link::HANDSHAKE_LIMIT) bytes and answers nothing about
//! itself: a refusal is one of three fixed words.
//!
//! A hub holds one key it proves with and any number it also accepts (a key rotation:
//! every node first accepts the new key, then proves with it, then drops the old one).
//! A hub without a key uses its hub id as the key: the same handshake, which only
//! checks that both sides name the same hub (the hub id is no secret).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::node::NodeId;

/// A nonce: 32 random bytes, fresh for each handshake.
pub(crate) type Nonce = [u8; 32];
/// A proof of the key: an HMAC-SHA256 tag.
pub(crate) type Proof = [u8; 32];

type HmacSha256 = Hmac<Sha256>;

/// Which side of the handshake a proof comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Dialer,
    Acceptor,
}

/// What both proofs of one handshake cover.
#[derive(Debug, Serialize)]
pub(crate) struct Transcript<'a> {
    pub(crate) hub_id: &'a str,
    pub(crate) dialer: NodeId,
    pub(crate) acceptor: NodeId,
    pub(crate) dialer_nonce: &'a Nonce,
    pub(crate) acceptor_nonce: &'a Nonce,
}

/// Why a handshake was refused, as the refused side is told: nothing about the node.
pub(crate) const REFUSED_HUB: &str = "not this hub";
/// The dialer expects another incarnation of the node it reached.
pub(crate) const REFUSED_INCARNATION: &str = "not the node dialed";
/// The peer's proof matched no key held here.
pub(crate) const REFUSED_KEY: &str = "not authenticated";

/// The keys of a hub and where its nonces come from.
pub(crate) struct ClusterAuth {
    /// The key this hub proves with first, then the others it accepts.
    keys: Vec<Vec<u8>>,
    nonces: Nonces,
    /// Peers that did not prove the key, or said this hub's proof was wrong (a
    /// handshake either way, or gossip): a hub that could not join tells why.
    refusals: AtomicU64,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("ClusterAuth")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Where nonces come from: the operating system, or (in a simulated world, where a
/// seed gives the same run) a counter from the seed.
#[derive(Debug)]
pub(crate) enum Nonces {
    Os,
    Seeded(AtomicU64),
}

impl ClusterAuth {
    /// `keys`: the one to prove with first, then the others accepted; none: the hub id
    /// stands in for a key.
    pub(crate) fn new(keys: Vec<Vec<u8>>, hub_id: &str, nonces: Nonces) -> Self {
        let keys = if keys.is_empty() {
            vec![hub_id.as_bytes().to_vec()]
        } else {
            keys
        };
        Self {
            keys,
            nonces,
            refusals: AtomicU64::new(0),
        }
    }

    /// A peer did not prove the key, or refused this hub's proof.
    pub(crate) fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times [`Self::refused`] was said.
    pub(crate) fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// A fresh nonce.
    pub(crate) fn nonce(&self) -> Nonce {
        let mut n = [0u8; 32];
        match &self.nonces {
            Nonces::Os => {
                if let Err(e) = getrandom::fill(&mut n) {
                    // No randomness from the OS: a nonce from the clock and a counter is
                    // still fresh, if guessable; the proofs still need the key.
                    tracing::warn!("no random nonce ({e}): using the clock");
                    let t = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    n[..16].copy_from_slice(&t.to_le_bytes());
                }
            }
            Nonces::Seeded(next) => {
                let v = next.fetch_add(1, Ordering::Relaxed);
                n[..8].copy_from_slice(&v.to_le_bytes());
            }
        }
        n
    }

    /// The proof of `side` over `t`, with the key at `key` (0: the one this hub proves
    /// with).
    pub(crate) fn prove(&self, key: usize, side: Side, t: &Transcript<'_>) -> Proof {
        self.mac(key, side, t).finalize().into_bytes().into()
    }

    /// Which key `proof` was made with by `side` over `t`, if any held here.
    pub(crate) fn verify(&self, side: Side, t: &Transcript<'_>, proof: &Proof) -> Option<usize> {
        (0..self.keys.len()).find(|&k| self.mac(k, side, t).verify_slice(proof).is_ok())
    }

    /// The MAC of a gossip datagram: `bytes`, numbered `counter`, from `from` to `to`,
    /// with the key this hub proves with.
    pub(crate) fn sign_datagram(
        &self,
        hub_id: &str,
        from: SocketAddr,
        to: SocketAddr,
        counter: u64,
        bytes: &[u8],
    ) -> Proof {
        datagram_mac(&self.keys[0], hub_id, from, to, counter, bytes)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `mac` is that of a gossip datagram with one of the keys held here.
    pub(crate) fn verify_datagram(
        &self,
        hub_id: &str,
        from: SocketAddr,
        to: SocketAddr,
        counter: u64,
        bytes: &[u8],
        mac: &Proof,
    ) -> bool {
        self.keys.iter().any(|k| {
            datagram_mac(k, hub_id, from, to, counter, bytes)
                .verify_slice(mac)
                .is_ok()
        })
    }

    fn mac(&self, key: usize, side: Side, t: &Transcript<'_>) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.keys[key]).expect("HMAC takes a key of any length");
        mac.update(match side {
            Side::Dialer => b"processhub/1 dialer",
            Side::Acceptor => b"processhub/1 accept",
        });
        // postcard of plain fields: the same bytes on every node.
        let bytes = postcard::to_allocvec(t).expect("a transcript encodes");
        mac.update(&bytes);
        mac
    }
}

/// The MAC of a gossip datagram under `key`, over both addresses and its counter.
fn datagram_mac(
    key: &[u8],
    hub_id: &str,
    from: SocketAddr,
    to: SocketAddr,
    counter: u64,
    bytes: &[u8],
) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(b"processhub/1 gossip");
    let head = postcard::to_allocvec(&(hub_id, from, to, counter)).expect("a header encodes");
    mac.update(&head);
    mac.update(bytes);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16, incarnation: u64) -> NodeId {
        NodeId::new(([127, 0, 0, 1], port).into(), incarnation)
    }

    fn auth(keys: &[&str]) -> ClusterAuth {
        ClusterAuth::new(
            keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            "hub",
            Nonces::Os,
        )
    }

    fn transcript<'a>(d: &'a Nonce, a: &'a Nonce) -> Transcript<'a> {
        Transcript {
            hub_id: "hub",
            dialer: node(1, 1),
            acceptor: node(2, 2),
            dialer_nonce: d,
            acceptor_nonce: a,
        }
    }

    #[test]
    fn a_proof_holds_only_for_its_key_side_nodes_and_nonces() {
        let (a, b) = (
            auth(&["k1-0123456789abcdef"]),
            auth(&["k2-0123456789abcdef"]),
        );
        let (nd, na) = (a.nonce(), a.nonce());
        assert_ne!(nd, na, "fresh nonces");
        let t = transcript(&nd, &na);
        let p = a.prove(0, Side::Dialer, &t);
        assert_eq!(a.verify(Side::Dialer, &t, &p), Some(0));
        assert_eq!(b.verify(Side::Dialer, &t, &p), None, "another key");
        assert_eq!(a.verify(Side::Acceptor, &t, &p), None, "reflected");
        let other = na.map(|b| b ^ 1);
        assert_eq!(
            a.verify(Side::Dialer, &transcript(&nd, &other), &p),
            None,
            "another connection's nonce"
        );
        let moved = Transcript {
            dialer: node(1, 9),
            ..transcript(&nd, &na)
        };
        assert_eq!(a.verify(Side::Dialer, &moved, &p), None, "another identity");
    }

    #[test]
    fn a_hub_that_accepts_two_keys_verifies_either() {
        let old = auth(&["old-0123456789abcdef"]);
        let new = auth(&["new-0123456789abcdef"]);
        let both = auth(&["new-0123456789abcdef", "old-0123456789abcdef"]);
        let (nd, na) = (old.nonce(), old.nonce());
        let t = transcript(&nd, &na);
        assert_eq!(
            both.verify(Side::Acceptor, &t, &old.prove(0, Side::Acceptor, &t)),
            Some(1)
        );
        assert_eq!(
            both.verify(Side::Acceptor, &t, &new.prove(0, Side::Acceptor, &t)),
            Some(0)
        );
        // The dialer answers with the key the acceptor proved with.
        let p = both.prove(1, Side::Dialer, &t);
        assert_eq!(old.verify(Side::Dialer, &t, &p), Some(0));
    }

    #[test]
    fn without_a_key_the_hub_id_stands_in() {
        let a = ClusterAuth::new(Vec::new(), "hub", Nonces::Seeded(AtomicU64::new(7)));
        let (nd, na) = (a.nonce(), a.nonce());
        assert_ne!(nd, na);
        let t = transcript(&nd, &na);
        let p = a.prove(0, Side::Dialer, &t);
        assert_eq!(auth(&["hub"]).verify(Side::Dialer, &t, &p), Some(0));
        assert!(!format!("{a:?}").contains("hub\""), "Debug shows no key");
    }
}
