//! What travels between hubs: frames, requests, responses, registry pushes.
//!
//! A frame on the socket is a 4-byte big-endian length and a postcard-encoded [`Frame`].
//! postcard was chosen for its small, varint-packed output and fast serde path; the
//! length prefix is read by `tokio-util`'s `LengthDelimitedCodec`, which also enforces
//! the frame-size limit on the way in.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::item::{StartItem, StartOutcome, StopOutcome};
use crate::core::recent::WireCalls;
use crate::core::registry::Push;
use crate::error::CallError;
use crate::net::auth::{Nonce, Proof};
use crate::net::error::TransportError;
use crate::node::NodeId;

/// Everything one hub sends another. Calls borrow their strings and arguments from the
/// frame they arrive in, so serving a call copies nothing.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame<'a> {
    /// The dialer's first frame.
    Hello {
        hub_id: String,
        from: NodeId,
        /// The incarnation the dialer expects to reach.
        to: NodeId,
        /// The dialer's fresh nonce (`net::auth`).
        nonce: Nonce,
    },
    /// The acceptor's answer to a good `Proof`: the connection is up.
    Welcome {
        node: NodeId,
    },
    /// The acceptor's answer to a bad `Hello` or `Proof`, one of the fixed words of
    /// `net::auth`; the connection closes after it.
    Reject {
        reason: String,
    },
    Request {
        rid: u64,
        #[serde(borrow)]
        req: Request<'a>,
    },
    Response {
        rid: u64,
        resp: Response,
    },
    Push(Push),
    // Appended: the variants above keep their tags (`encode_push` relies on Push's).
    /// The acceptor's answer to a good `Hello`: its nonce, and its proof of the key.
    Challenge {
        nonce: Nonce,
        proof: Proof,
    },
    /// The dialer's proof of the key, once the acceptor's checked out.
    Proof {
        proof: Proof,
    },
    /// A standby's word to the caller of an identified write that it holds the write
    /// (one way, no response): see [`Held`].
    Held(Held),
}

/// A standby holds an identified write (its primary asked it to tell the caller, with
/// [`AckTo`]): the caller acknowledges the write once every standby of the shipment has
/// said so, half a round trip before the primary's own reply would come.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) call_id: u128,
    /// The shipment that carried it: (epoch, seq).
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    /// Every standby the shipment went to: all of them must hold it.
    pub(crate) standbys: Vec<NodeId>,
    /// The write's reply, as the primary recorded it.
    pub(crate) reply: serde_bytes::ByteBuf,
}

/// Whom the standbys of a shipment tell, with [`Held`], once they hold it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AckTo {
    pub(crate) caller: NodeId,
    pub(crate) call_id: u128,
    /// Every standby the shipment goes to.
    pub(crate) standbys: Vec<NodeId>,
}

/// A request. Every variant wraps a struct of its own (postcard encodes a newtype
/// variant of a struct as the struct variant with the same fields: the bytes are those
/// of the flat variants), so that the serving side splits calls (their own path,
/// grouped per child) from the other requests ([`Command`]), in which a call cannot
/// occur.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request<'a> {
    /// Start these children on the receiver (or forward them to their owner).
    Start(Start),
    /// Stop a child the receiver runs.
    Stop(Stop),
    /// Call a method of a child the receiver runs.
    Call(#[serde(borrow)] Call<'a>),
    /// A part of start items too large for one frame.
    Stage(#[serde(borrow)] Stage<'a>),
    /// Start the items staged under a transfer.
    StartStaged(StartStaged),
    /// Keep a standby copy of a replicated child.
    Replicate(Replicate),
    // Appended: the variants above keep their bytes on the wire.
    /// Confirm the sender for its lease (see `crate::core::downing`).
    Lease(LeaseAsk),
    /// Merge the state of a duplicate the sender dropped into the instance here.
    Merge(Merge),
    /// Grant the sender these new ids (see `crate::core::engine`'s claims).
    Claim(ClaimAsk),
    /// Set the metadata of a child the receiver runs.
    UpdateMeta(UpdateMeta),
    /// A call with the caller's trace id (see `crate::trace`).
    TracedCall(#[serde(borrow)] Call<'a>, u64),
    /// Replay a write on a standby copy of a replicated child (`ship = "calls"`).
    ReplicateCall(ReplicateCall),
    /// Keep the standby copy staged under a transfer (a [`Replicate`] too large for
    /// one frame, sent in parts as [`Request::Stage`]).
    ReplicateStaged(ReplicateStaged),
    /// Merge the duplicate's state staged under a transfer (a [`Merge`] too large for
    /// one frame, sent in parts as [`Request::Stage`]).
    MergeStaged(MergeStaged),
    /// [`Request::Replicate`], and tell the write's caller once it is kept.
    ReplicateAcked(Replicate, AckTo),
    /// [`Request::ReplicateCall`], and tell the write's caller once it is kept.
    ReplicateCallAcked(ReplicateCall, AckTo),
    /// Send the salvages of these children, if the receiver holds them (see
    /// `crate::core::engine::salvage`).
    Salvage(Vec<String>),
}

/// Merge the duplicate whose [`Merge`] was staged under `transfer`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MergeStaged {
    pub(crate) transfer: u64,
}

/// Keep the standby copy whose [`Replicate`] was staged under `transfer`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplicateStaged {
    pub(crate) transfer: u64,
}

/// A write to replay on a standby copy (`ship = "calls"`): the primary's shipment `seq`
/// of `epoch`, sent as the call instead of the state, to a standby that holds shipment
/// `seq - 1`. Answered [`Response::Replicated`] with `Ok(())` if kept (or already
/// held), [`Response::OutOfStep`] if the standby needs the state instead.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplicateCall {
    pub(crate) id: String,
    pub(crate) type_name: String,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) method: String,
    pub(crate) args: serde_bytes::ByteBuf,
    /// Replies of the identified writes since the previous shipment.
    pub(crate) recent: WireCalls,
}

/// The new metadata of a child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct UpdateMeta {
    pub(crate) id: String,
    pub(crate) meta: crate::metadata::Meta,
}

/// The new ids a node claims before it acknowledges their start.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClaimAsk {
    pub(crate) ids: Vec<String>,
}

/// The state of a duplicate the sender dropped after a split healed (`Divergence`), for
/// the instance of `id` here to merge (`#[on_conflict]`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Merge {
    pub(crate) id: String,
    pub(crate) type_name: String,
    pub(crate) state: serde_bytes::ByteBuf,
}

/// Confirm the sender for its lease: granted unless the receiver downed it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LeaseAsk {}

/// A request other than a call: what the serving side's request path handles.
#[derive(Debug)]
pub(crate) enum Command<'a> {
    Start(Start),
    Stop(Stop),
    Stage(Stage<'a>),
    StartStaged(StartStaged),
    Replicate(Box<Replicate>, Option<Box<AckTo>>),
    Lease(LeaseAsk),
    Merge(Merge),
    Claim(ClaimAsk),
    UpdateMeta(UpdateMeta),
    ReplicateCall(Box<ReplicateCall>, Option<Box<AckTo>>),
    ReplicateStaged(ReplicateStaged),
    MergeStaged(MergeStaged),
    Salvage(Vec<String>),
}

impl<'a> Request<'a> {
    /// A call (with its trace id, if it carries one), or the request as a [`Command`].
    pub(crate) fn split(self) -> Result<(Call<'a>, Option<u64>), Command<'a>> {
        Err(match self {
            Request::Call(call) => return Ok((call, None)),
            Request::TracedCall(call, trace) => return Ok((call, Some(trace))),
            Request::Start(r) => Command::Start(r),
            Request::Stop(r) => Command::Stop(r),
            Request::Stage(r) => Command::Stage(r),
            Request::StartStaged(r) => Command::StartStaged(r),
            Request::Replicate(r) => Command::Replicate(Box::new(r), None),
            Request::ReplicateAcked(r, to) => Command::Replicate(Box::new(r), Some(Box::new(to))),
            Request::Lease(r) => Command::Lease(r),
            Request::Merge(r) => Command::Merge(r),
            Request::Claim(r) => Command::Claim(r),
            Request::UpdateMeta(r) => Command::UpdateMeta(r),
            Request::ReplicateCall(r) => Command::ReplicateCall(Box::new(r), None),
            Request::ReplicateCallAcked(r, to) => {
                Command::ReplicateCall(Box::new(r), Some(Box::new(to)))
            }
            Request::ReplicateStaged(r) => Command::ReplicateStaged(r),
            Request::MergeStaged(r) => Command::MergeStaged(r),
            Request::Salvage(ids) => Command::Salvage(ids),
        })
    }
}

/// Call a method of a child the receiver runs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Call<'a> {
    #[serde(borrow)]
    pub(crate) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) type_name: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) method: Cow<'a, str>,
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) args: Cow<'a, [u8]>,
    /// For a write to a replicated child: unique per call (the caller's incarnation and
    /// a counter), so that a retry after its primary died is applied once.
    pub(crate) call_id: u128,
}

/// Start these children on the receiver (or forward them to their owner).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Start {
    pub(crate) items: Vec<StartItem>,
    pub(crate) hops: u8,
}

/// Stop a child the receiver runs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stop {
    pub(crate) id: String,
    pub(crate) type_name: String,
}

/// A part of start items too large for one frame (a big moved state): the receiver
/// appends `data` at `offset` of transfer `transfer`, `total` bytes in all.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stage<'a> {
    pub(crate) transfer: u64,
    pub(crate) offset: u64,
    pub(crate) total: u64,
    #[serde(borrow, with = "serde_bytes")]
    pub(crate) data: Cow<'a, [u8]>,
}

/// Start the items whose encoding was staged under `transfer` (as `Start`).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StartStaged {
    pub(crate) transfer: u64,
    pub(crate) hops: u8,
}

/// Keep this state of a replicated child as a standby copy (from its primary, after
/// each write, and in full when the standby set changes).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Replicate {
    pub(crate) id: String,
    pub(crate) type_name: String,
    pub(crate) epoch: u64,
    /// Counts the primary's shipments within its epoch: a standby keeps the newest.
    pub(crate) seq: u64,
    pub(crate) state: serde_bytes::ByteBuf,
    /// Replies of the latest identified writes, to answer their retries: all of them,
    /// or (`append`) those since the previous shipment to this standby.
    pub(crate) recent: WireCalls,
    pub(crate) append: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Response {
    Started(Vec<StartOutcome>),
    Stopped(StopOutcome),
    Reply(Result<serde_bytes::ByteBuf, CallError>),
    /// The receiver does not run the child called; its registry says `owner` does.
    NotHere {
        owner: NodeId,
    },
    /// A part was staged, or why it was refused (the transfer is dropped).
    Staged(Result<(), String>),
    /// A standby copy was kept, or why not.
    Replicated(Result<(), String>),
    // Appended.
    /// The answer to a lease renewal: `false` once the receiver downed the asker.
    Lease {
        granted: bool,
    },
    /// A duplicate's state was merged, or why not.
    Merged(Result<(), String>),
    /// The answers to a claim, one per id in order, and the members of the answering
    /// node's view (the claimant counts its quorum over them too).
    Claimed {
        answers: Vec<crate::core::item::ClaimAnswer>,
        members: Vec<NodeId>,
    },
    /// What became of a metadata update.
    MetaUpdated(crate::core::item::MetaOutcome),
    /// A write shipped as its call was not kept: the standby needs the state.
    OutOfStep,
    /// The salvages asked for that the receiver holds.
    Salvage(Vec<SalvagedCopy>),
}

/// A state a downed node kept of a replicated child (see
/// `crate::core::engine::salvage`), as it is fetched.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SalvagedCopy {
    pub(crate) id: String,
    /// (epoch, shipment) of the state; the shipment is
    /// [`PRIMARY_STATE`](crate::core::engine::PRIMARY_STATE) for a primary's own.
    pub(crate) version: (u64, u64),
    pub(crate) state: serde_bytes::ByteBuf,
    /// Writes shipped as calls since `state` (`ship = "calls"`): (method, arguments).
    pub(crate) calls: Vec<(String, serde_bytes::ByteBuf)>,
    /// Replies of its latest identified writes.
    pub(crate) recent: WireCalls,
}

/// One call of a `CallBatch` (`crate::child`): its method name and arguments, shared with the frame.
#[derive(Debug)]
pub(crate) struct EncodedCall {
    pub(crate) method: bytes::Bytes,
    pub(crate) args: bytes::Bytes,
    /// Non-zero for an identified write (see `crate::core::recent::RecentCalls`).
    pub(crate) call_id: u128,
    /// The caller's trace id (see `crate::trace`).
    pub(crate) trace: Option<u64>,
}

/// The first byte of a [`Frame::Request`]'s body (postcard writes the variant's index
/// first): a connection over its in-flight limit tells requests from the rest without
/// decoding them.
pub(crate) const REQUEST_TAG: u8 = 3;
/// The first byte of a [`Frame::Response`]'s body.
pub(crate) const RESPONSE_TAG: u8 = 4;
/// The first byte of a [`Frame::Held`]'s body.
pub(crate) const HELD_TAG: u8 = 8;
/// The index of [`Request::Lease`], written after a request's id.
pub(crate) const LEASE_TAG: u8 = 6;

/// Whether a frame body is a lease renewal: answered at once from the engine, never
/// held back (a renewal that waited behind slow calls would fence its sender).
pub(crate) fn is_lease_request(body: &[u8]) -> bool {
    if body.first() != Some(&REQUEST_TAG) {
        return false;
    }
    // The request id, a varint, then the request's own index.
    let rid = body[1..].iter().position(|b| b & 0x80 == 0);
    rid.is_some_and(|n| body.get(n + 2) == Some(&LEASE_TAG))
}

/// Encodes a frame with its length prefix.
pub(crate) fn encode(frame: &Frame<'_>) -> Result<Bytes, postcard::Error> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(&[0u8; 4]);
    let mut buf = postcard::to_extend(frame, head)?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(buf))
}

/// Appends a frame with its length prefix to `out`; on an error (the frame does not
/// encode, or its body exceeds `max`) `out` is left as it was.
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    frame: &Frame<'_>,
    max: usize,
) -> Result<(), crate::net::error::TransportError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]);
    if let Err(e) = postcard::to_io(frame, &mut *out) {
        out.truncate(start);
        return Err(TransportError::Encode(e.to_string()));
    }
    let len = out.len() - start - 4;
    if len > max {
        out.truncate(start);
        return Err(TransportError::TooLarge { size: len, max });
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame body (without its length prefix).
pub(crate) fn decode(body: &[u8]) -> Result<Frame<'_>, postcard::Error> {
    postcard::from_bytes(body)
}

/// Encodes a push frame.
pub(crate) fn encode_push(push: &Push) -> Result<Bytes, postcard::Error> {
    // Push is serialized by reference: wrap without moving.
    #[derive(Serialize)]
    enum FrameRef<'a> {
        #[allow(dead_code)]
        Hello,
        #[allow(dead_code)]
        Welcome,
        #[allow(dead_code)]
        Reject,
        #[allow(dead_code)]
        Request,
        #[allow(dead_code)]
        Response,
        Push(&'a Push),
    }
    let mut buf = postcard::to_extend(&FrameRef::Push(push), vec![0u8; 4])?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_are_told_by_their_first_byte() {
        let request = encode(&Frame::Request {
            rid: 1,
            req: Request::Lease(LeaseAsk {}),
        })
        .unwrap();
        assert_eq!(request[4], REQUEST_TAG);
        let response = encode(&Frame::Response {
            rid: 1,
            resp: Response::Lease { granted: true },
        })
        .unwrap();
        assert_eq!(response[4], RESPONSE_TAG);
        let push = encode_push(&Push::Leaving).unwrap();
        assert!(push[4] != REQUEST_TAG && push[4] != RESPONSE_TAG);
        let held = encode(&Frame::Held(Held {
            call_id: 1,
            epoch: 1,
            seq: 1,
            standbys: vec![],
            reply: serde_bytes::ByteBuf::new(),
        }))
        .unwrap();
        assert_eq!(held[4], HELD_TAG);
        for rid in [0, 1, 300, u64::MAX] {
            let lease = encode(&Frame::Request {
                rid,
                req: Request::Lease(LeaseAsk {}),
            })
            .unwrap();
            assert!(is_lease_request(&lease[4..]), "{rid}");
            let stop = encode(&Frame::Request {
                rid,
                req: Request::Stop(Stop {
                    id: "a".into(),
                    type_name: "t".into(),
                }),
            })
            .unwrap();
            assert!(!is_lease_request(&stop[4..]), "{rid}");
        }
        assert!(!is_lease_request(&[REQUEST_TAG, 0x80]), "cut short");
    }

    #[test]
    fn a_traced_call_is_the_call_with_its_trace_id_after_it() {
        let call = || Call {
            id: "a".into(),
            type_name: "T".into(),
            method: "add".into(),
            args: Cow::Borrowed(&[9]),
            call_id: 0,
        };
        let plain = postcard::to_allocvec(&Request::Call(call())).unwrap();
        let traced = postcard::to_allocvec(&Request::TracedCall(call(), 300)).unwrap();
        // Its own variant index, then the call's bytes as ever, then the id (a varint).
        assert_eq!(traced[0], 10);
        assert_eq!(&traced[1..plain.len()], &plain[1..]);
        assert_eq!(&traced[plain.len()..], &[0xac, 0x02]);
        match postcard::from_bytes::<Request<'_>>(&traced)
            .unwrap()
            .split()
        {
            Ok((c, Some(300))) => assert_eq!((&*c.id, &*c.method), ("a", "add")),
            other => panic!("{other:?}"),
        }
        match postcard::from_bytes::<Request<'_>>(&plain).unwrap().split() {
            Ok((_, None)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trip_with_length_prefix() {
        let frame = Frame::Request {
            rid: 7,
            req: Request::Call(Call {
                id: "🦀/a b".into(),
                type_name: "T".into(),
                method: "add".into(),
                args: Cow::Borrowed(&[1, 2, 3]),
                call_id: 0,
            }),
        };
        let bytes = encode(&frame).unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 4);
        match decode(&bytes[4..]).unwrap() {
            Frame::Request {
                rid: 7,
                req: Request::Call(Call { id, args, .. }),
            } => {
                assert_eq!(id, "🦀/a b");
                assert!(matches!(id, Cow::Borrowed(_)), "decoding borrows");
                assert_eq!(&*args, &[1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_push_encoded_by_reference_decodes_as_a_frame() {
        let bytes = encode_push(&Push::Remove(vec![("a".into(), 3)])).unwrap();
        match decode(&bytes[4..]).unwrap() {
            Frame::Push(Push::Remove(ids)) => assert_eq!(ids, vec![("a".to_string(), 3)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_wrapping_a_struct_encode_as_the_flat_variants_did() {
        // What the flat `Stop { id, type_name }` (variant 1) encoded to.
        let flat = [1, 1, b'a', 1, b'T'];
        let req = Request::Stop(Stop {
            id: "a".into(),
            type_name: "T".into(),
        });
        assert_eq!(postcard::to_allocvec(&req).unwrap(), flat);
        // `StartStaged { transfer, hops }` (variant 4), and a borrowed `Stage` (3).
        let req = Request::StartStaged(StartStaged {
            transfer: 300,
            hops: 2,
        });
        assert_eq!(postcard::to_allocvec(&req).unwrap(), [4, 0xac, 0x02, 2]);
        let req = Request::Stage(Stage {
            transfer: 1,
            offset: 0,
            total: 2,
            data: Cow::Borrowed(&[7, 8]),
        });
        let bytes = postcard::to_allocvec(&req).unwrap();
        assert_eq!(bytes, [3, 1, 0, 2, 2, 7, 8]);
        match postcard::from_bytes::<Request<'_>>(&bytes).unwrap().split() {
            Err(Command::Stage(s)) => assert!(matches!(s.data, Cow::Borrowed(&[7, 8]))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn staged_copies_and_merges_are_asked_for_with_the_last_variants() {
        // Appended after `ReplicateCall` (11): the variants before keep their bytes.
        let req = Request::ReplicateStaged(ReplicateStaged { transfer: 300 });
        assert_eq!(postcard::to_allocvec(&req).unwrap(), [12, 0xac, 0x02]);
        let req = Request::MergeStaged(MergeStaged { transfer: 1 });
        assert_eq!(postcard::to_allocvec(&req).unwrap(), [13, 1]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in [&[][..], &[255, 255, 255, 255, 255][..], &[3, 0, 1][..]] {
            assert!(decode(body).is_err());
        }
    }
}
