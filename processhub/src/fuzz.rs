//! A mutation fuzzer for what a peer's bytes reach first: the frame codec (the length
//! prefix and the handshake's limit), the frame decoder, the handshake's proof check,
//! and the engine's registry-push and start-admission handlers.
//!
//! No nightly toolchain here, so no libFuzzer: this is a seeded mutation fuzzer over a
//! corpus of valid frames (`fuzz/corpus/`, one file per frame, written from the current
//! wire format when missing). Each execution mutates one or two corpus entries (bit
//! flips, interesting bytes and varints, insertions, deletions, copies, splices,
//! truncations) and runs every target on the result; a panic fails with the input's
//! bytes written to `fuzz/crashes/`, and so does an execution slower than a second
//! (a hang). The run in the test suite is short; a long one:
//!
//! ```sh
//! PROCESSHUB_FUZZ_EXECS=10000000 cargo test --release -p processhub --lib fuzz -- --nocapture
//! ```

// Built for the tests, and for `fuzz/afl` (feature `fuzzing`), which uses only the
// targets.
#![cfg_attr(not(test), allow(dead_code))]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::core::engine::testing::{engine, entry, new_item, node, TestChild};
use crate::core::engine::Engine;
use crate::core::entry::StartState;
use crate::core::held::{HeldWrites, Word};
use crate::core::item::{StartFailure, StartItem};
use crate::core::registry::Push;
use crate::net::auth::{ClusterAuth, Nonces, Side, Transcript};
use crate::net::link::{FrameLimit, Limited, HANDSHAKE_LIMIT};
use crate::net::wire::{
    decode, encode, AckTo, Call, ClaimAsk, Command, Frame, Held, MergeStaged, ReplicateCall,
    ReplicateStaged, Request, Start, Stop,
};

/// A small, fast generator (xorshift64*): the same seed gives the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid frames of every kind a peer sends.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let item = |id: &str, epoch: u64| StartItem {
        epoch,
        ..new_item(id, "t")
    };
    let with_standbys = {
        let mut e = entry("t", node(2), 3);
        e.standbys = Some(vec![node(1), node(3)].into_boxed_slice());
        e
    };
    let frames: Vec<(&str, Frame<'_>)> = vec![
        (
            "hello",
            Frame::Hello {
                hub_id: "fuzz".into(),
                from: node(2),
                to: node(1),
                nonce: [3; 32],
            },
        ),
        (
            "challenge",
            Frame::Challenge {
                nonce: [4; 32],
                proof: [5; 32],
            },
        ),
        ("proof", Frame::Proof { proof: [6; 32] }),
        ("welcome", Frame::Welcome { node: node(1) }),
        (
            "reject",
            Frame::Reject {
                reason: "not authenticated".into(),
            },
        ),
        (
            "call",
            Frame::Request {
                rid: 7,
                req: Request::Call(Call {
                    id: "a".into(),
                    type_name: "t".into(),
                    method: "add".into(),
                    args: vec![1, 2, 3].into(),
                    call_id: 9,
                }),
            },
        ),
        (
            "start",
            Frame::Request {
                rid: 8,
                req: Request::Start(Start {
                    items: vec![item("new", 0), item("moved", 4)],
                    hops: 1,
                }),
            },
        ),
        (
            "stop",
            Frame::Request {
                rid: 9,
                req: Request::Stop(Stop {
                    id: "a".into(),
                    type_name: "t".into(),
                }),
            },
        ),
        (
            "upsert",
            Frame::Push(Push::Upsert(vec![
                ("a".into(), entry("t", node(2), 1)),
                ("b".into(), with_standbys.clone()),
            ])),
        ),
        (
            "remove",
            Frame::Push(Push::Remove(vec![("a".into(), 1), ("zz".into(), 9)])),
        ),
        (
            "snapshot",
            Frame::Push(Push::Snapshot {
                entries: vec![("c".into(), entry("t", node(2), 2))],
                first: true,
                last: true,
            }),
        ),
        (
            "assigned",
            Frame::Push(Push::Assigned(vec![(
                "d".into(),
                entry("t", node(1), 5),
                node(3),
            )])),
        ),
        ("down", Frame::Push(Push::Down(vec![node(3), node(1)]))),
        ("leaving", Frame::Push(Push::Leaving)),
        (
            "claim",
            Frame::Request {
                rid: 10,
                req: Request::Claim(ClaimAsk {
                    ids: vec!["a".into(), "new".into()],
                }),
            },
        ),
        (
            "unclaim",
            Frame::Push(Push::Unclaim(vec!["a".into(), "new".into()])),
        ),
        (
            "removed",
            Frame::Push(Push::Removed(vec![
                ("a".into(), 2, true),
                ("b".into(), 1, false),
            ])),
        ),
        (
            "replicate-staged",
            Frame::Request {
                rid: 11,
                req: Request::ReplicateStaged(ReplicateStaged { transfer: 3 }),
            },
        ),
        (
            "merge-staged",
            Frame::Request {
                rid: 12,
                req: Request::MergeStaged(MergeStaged { transfer: 4 }),
            },
        ),
        (
            "held",
            Frame::Held(Held {
                call_id: 9,
                epoch: 1,
                seq: 4,
                standbys: vec![node(2), node(3)],
                reply: serde_bytes::ByteBuf::from(vec![5]),
            }),
        ),
        (
            "replicate-call-acked",
            Frame::Request {
                rid: 13,
                req: Request::ReplicateCallAcked(
                    ReplicateCall {
                        id: "b".into(),
                        type_name: "t".into(),
                        epoch: 3,
                        seq: 2,
                        method: "add".into(),
                        args: serde_bytes::ByteBuf::from(vec![1]),
                        recent: vec![(9, serde_bytes::ByteBuf::from(vec![5]))],
                    },
                    AckTo {
                        caller: node(2),
                        call_id: 9,
                        standbys: vec![node(1), node(3)],
                    },
                ),
            },
        ),
        (
            "salvaged",
            Frame::Push(Push::Salvaged(vec![
                ("b".into(), 3, u64::MAX),
                ("theirs".into(), 1, 4),
            ])),
        ),
        (
            "salvage",
            Frame::Request {
                rid: 14,
                req: Request::Salvage(vec!["b".into(), "theirs".into()]),
            },
        ),
    ];
    frames
        .into_iter()
        .map(|(name, f)| (name.to_string(), encode(&f).expect("encodes").to_vec()))
        .collect()
}

/// The corpus: the files under `fuzz/corpus/`, written from [`seeds`] when missing.
fn corpus() -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("corpus");
    let _ = std::fs::create_dir_all(&dir);
    for (name, bytes) in seeds() {
        let path = dir.join(format!("{name}.bin"));
        if !path.exists() {
            let _ = std::fs::write(&path, &bytes);
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    let mut out: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    if out.is_empty() {
        out = seeds().into_iter().map(|(_, b)| b).collect();
    }
    out
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// `input` changed by one to four mutations, `other` to splice from.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x10];
    let mut data = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    data.insert(i, rng.next() as u8);
                }
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                data.drain(i..i + n);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                let copy: Vec<u8> = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, copy);
            }
            5 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            6 => data.truncate(rng.below(len + 1)),
            7 if len > 0 => {
                // A big varint (a length, a count, an epoch).
                let i = rng.below(len);
                let big = [0xff, 0xff, 0xff, 0xff, 0x0f];
                let n = 1 + rng.below(big.len());
                data.splice(i..i, big[..n].iter().copied());
            }
            _ if len > 4 => {
                // A length prefix that lies.
                let n = (rng.next() as u32).to_be_bytes();
                data[..4].copy_from_slice(&n);
            }
            _ => {}
        }
    }
    data
}

thread_local! {
    static TARGETS: std::cell::RefCell<Option<Targets>> = const { std::cell::RefCell::new(None) };
}

/// Runs every target on `data`, with this thread's targets (made at the first call).
pub(crate) fn run_once(data: &[u8]) {
    TARGETS.with(|t| {
        t.borrow_mut().get_or_insert_with(Targets::new).run(data);
    });
}

/// Runs every target on `data`.
struct Targets {
    engine: Engine<TestChild>,
    auth: ClusterAuth,
    execs_on_engine: usize,
    /// Inputs that decoded as a frame, and those that reached the engine.
    decoded: u64,
    handled: u64,
    /// A caller's writes waiting for their standbys' word.
    held: HeldWrites<u128>,
}

impl Targets {
    fn new() -> Self {
        Self {
            engine: Self::fresh_engine(),
            auth: ClusterAuth::new(vec![b"fuzz-cluster-key-0123".to_vec()], "fuzz", Nonces::Os),
            execs_on_engine: 0,
            decoded: 0,
            handled: 0,
            held: HeldWrites::default(),
        }
    }

    /// A member of three with a child of its own and one of a peer's.
    fn fresh_engine() -> Engine<TestChild> {
        let mut e = engine(1, &[1, 2, 3]);
        crate::core::engine::testing::start(&mut e, "mine", &TestChild::new("mine", "t"));
        e.push(
            node(2),
            Push::Upsert(vec![("theirs".into(), entry("t", node(2), 1))]),
        );
        e.take_output();
        e
    }

    fn run(&mut self, data: &[u8]) {
        // The codec, as a stream cut anywhere, under the handshake's limit and then
        // the frame limit.
        for limit in [HANDSHAKE_LIMIT, 1 << 20] {
            let mut codec = Limited::new(FrameLimit::handshake());
            codec.limit().set(limit);
            let mut buf = BytesMut::new();
            let cut = data.len() / 2;
            for part in [&data[..cut], &data[cut..]] {
                buf.extend_from_slice(part);
                while let Ok(Some(_)) = codec.decode(&mut buf) {}
            }
        }
        // The frame decoder, on the body as a framed stream would hand it over.
        let body = if data.len() >= 4 { &data[4..] } else { data };
        for body in [data, body] {
            let Ok(frame) = decode(body) else { continue };
            self.decoded += 1;
            self.frame(frame);
        }
        self.execs_on_engine += 1;
        if self.execs_on_engine == 2_000 {
            // A registry fuzzed for long grows and slows; start again.
            self.engine = Self::fresh_engine();
            self.execs_on_engine = 0;
        }
    }

    fn frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Hello {
                hub_id,
                from,
                to,
                nonce,
            } => {
                let t = Transcript {
                    hub_id: &hub_id,
                    dialer: from,
                    acceptor: to,
                    dialer_nonce: &nonce,
                    acceptor_nonce: &nonce,
                };
                let _ = self.auth.verify(Side::Dialer, &t, &nonce);
            }
            Frame::Proof { proof } | Frame::Challenge { proof, .. } => {
                let t = Transcript {
                    hub_id: "fuzz",
                    dialer: node(2),
                    acceptor: node(1),
                    dialer_nonce: &proof,
                    acceptor_nonce: &proof,
                };
                assert_eq!(self.auth.verify(Side::Dialer, &t, &proof), None);
            }
            Frame::Held(held) => {
                self.handled += 1;
                // Waiting, as a caller of that write would be; a word completes a
                // caller of that very write only.
                self.held.wait(held.call_id, held.call_id);
                let from = node(2 + (self.execs_on_engine % 2) as u16);
                let word = Word {
                    from,
                    call_id: held.call_id,
                    epoch: held.epoch,
                    seq: held.seq,
                    standbys: &held.standbys,
                };
                if let Some(done) = self.held.heard(word) {
                    assert_eq!(done, held.call_id);
                }
                self.held.forget(held.call_id);
            }
            Frame::Push(push) => {
                self.handled += 1;
                let from = node(2 + (self.execs_on_engine % 2) as u16);
                self.engine.push(from, push);
                self.engine.take_output();
            }
            Frame::Request { req, .. } => match req.split() {
                Ok((call, _)) => {
                    let _ = self.engine.route(&call.id);
                    let _ = self.engine.missing(&call.id);
                }
                Err(Command::Start(Start { items, .. })) => {
                    self.handled += 1;
                    for item in items {
                        let _ = StartState::from_slice(&item.state);
                        if let Ok(epoch) = self.engine.admit(&item) {
                            self.engine
                                .started(&item, epoch, Err(StartFailure::UnknownType));
                        }
                    }
                    self.engine.take_output();
                }
                Err(Command::Stop(stop)) => {
                    self.handled += 1;
                    let _ = self.engine.stop(&stop.id, &stop.type_name);
                    self.engine.take_output();
                }
                Err(Command::Claim(ask)) => {
                    self.handled += 1;
                    let from = node(2 + (self.execs_on_engine % 2) as u16);
                    let answers = self.engine.claim(from, &ask.ids);
                    assert_eq!(answers.len(), ask.ids.len(), "one answer per id");
                    self.engine.take_output();
                }
                Err(Command::Salvage(ids)) => {
                    self.handled += 1;
                    let given = self.engine.give_salvage(&ids);
                    assert!(given.len() <= ids.len(), "only what was asked");
                }
                Err(_) => {}
            },
            _ => {}
        }
    }
}

/// Runs `execs` executions from `seed`; a panic or a hang fails with the input saved.
/// Returns how many inputs decoded as a frame, and how many reached the engine.
fn fuzz(execs: u64, seed: u64) -> (u64, u64) {
    let corpus = corpus();
    let mut rng = Rng(seed | 1);
    let mut targets = Targets::new();
    let started = Instant::now();
    for n in 0..execs {
        let a = &corpus[rng.below(corpus.len())];
        let b = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, a, b);
        let t = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| targets.run(&input)));
        let slow = t.elapsed() > Duration::from_secs(1);
        if outcome.is_err() || slow {
            let dir = fuzz_dir().join("crashes");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("seed-{seed}-exec-{n}.bin"));
            let _ = std::fs::write(&path, &input);
            panic!(
                "execution {n} {} (input saved to {}): {input:?}",
                if slow { "hung" } else { "panicked" },
                path.display()
            );
        }
    }
    println!(
        "fuzz: {execs} executions from seed {seed} over {} corpus entries in {:.1?}, no panic, \
         none over 1 s; {} decoded as a frame, {} reached the engine",
        corpus.len(),
        started.elapsed(),
        targets.decoded,
        targets.handled
    );
    (targets.decoded, targets.handled)
}

#[test]
fn fuzz_the_codec_decoder_handshake_and_push_handler() {
    let execs = std::env::var("PROCESSHUB_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed = std::env::var("PROCESSHUB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (decoded, handled) = fuzz(execs, seed);
    // Mutations that never decode would test only the decoder's refusals.
    assert!(
        decoded > execs / 20 && handled > execs / 50,
        "{decoded} decoded, {handled} handled"
    );
}

#[test]
fn every_seed_decodes_as_the_frame_it_was() {
    for (name, bytes) in seeds() {
        assert!(decode(&bytes[4..]).is_ok(), "{name}");
        // As the coverage-guided driver runs it.
        run_once(&bytes);
    }
}
