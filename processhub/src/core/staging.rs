//! Transfers larger than one frame, received in parts.
//!
//! A hot move whose state does not fit in a frame sends the encoded start items in
//! parts (`Request::Stage`), then asks the target to start what it staged
//! (`Request::StartStaged`). Parts must come in order; a transfer is bounded in size
//! and dropped when it goes quiet (its sender died or gave up). Time comes in as a value
//! (the shell reads the clock).

use std::collections::HashMap;
use std::time::Duration;

use std::time::Instant;

use crate::node::NodeId;

/// Why a part or a transfer was refused (the transfer is dropped).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StagingError {
    /// The transfer would be larger than the limit.
    #[error("a transfer of {total} bytes exceeds the limit of {max}")]
    TooLarge { total: u64, max: usize },
    /// No such transfer is being received (never begun, dropped, or taken).
    #[error("no transfer {0} under way")]
    Unknown(u64),
    /// A part gives another total than the transfer's first one.
    #[error("transfer {transfer} was {was} bytes, now {now}")]
    TotalChanged {
        transfer: u64,
        was: usize,
        now: usize,
    },
    /// A part is not the next one.
    #[error("part at {offset} of transfer {transfer}, expected {expected}")]
    OutOfOrder {
        transfer: u64,
        offset: u64,
        expected: usize,
    },
    /// A part goes past the total.
    #[error("transfer {transfer} overruns its {total} bytes")]
    Overrun { transfer: u64, total: usize },
    /// The transfer was taken before all its parts came.
    #[error("transfer {transfer} is incomplete: {got} of {total} bytes")]
    Incomplete {
        transfer: u64,
        got: usize,
        total: usize,
    },
}

/// One transfer being received.
#[derive(Debug)]
struct Transfer {
    bytes: Vec<u8>,
    total: usize,
    touched: Instant,
}

/// One part of a transfer: `data` at `offset`, of `total` bytes in all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Part<'a> {
    pub(crate) offset: u64,
    pub(crate) total: u64,
    pub(crate) data: &'a [u8],
}

/// The transfers a node is receiving, by sender and transfer id.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    transfers: HashMap<(NodeId, u64), Transfer>,
}

impl Staging {
    /// Adds a part to transfer `key` (sender, transfer id), whose total may be at most
    /// `max` bytes. A part out of order, or beyond the total or `max`, drops the
    /// transfer.
    pub(crate) fn stage(
        &mut self,
        key: (NodeId, u64),
        part: Part<'_>,
        max: usize,
        now: Instant,
    ) -> Result<(), StagingError> {
        let result = self.append(key, part, max, now);
        if result.is_err() {
            self.transfers.remove(&key);
        }
        result
    }

    fn append(
        &mut self,
        key: (NodeId, u64),
        Part {
            offset,
            total,
            data,
        }: Part<'_>,
        max: usize,
        now: Instant,
    ) -> Result<(), StagingError> {
        let total = usize::try_from(total)
            .ok()
            .filter(|t| *t <= max)
            .ok_or(StagingError::TooLarge { total, max })?;
        if offset == 0 {
            self.transfers.insert(
                key,
                Transfer {
                    bytes: Vec::with_capacity(total.min(data.len().max(1) * 64)),
                    total,
                    touched: now,
                },
            );
        }
        let t = self
            .transfers
            .get_mut(&key)
            .ok_or(StagingError::Unknown(key.1))?;
        if t.total != total {
            return Err(StagingError::TotalChanged {
                transfer: key.1,
                was: t.total,
                now: total,
            });
        }
        if offset != t.bytes.len() as u64 {
            return Err(StagingError::OutOfOrder {
                transfer: key.1,
                offset,
                expected: t.bytes.len(),
            });
        }
        if t.bytes.len() + data.len() > total {
            return Err(StagingError::Overrun {
                transfer: key.1,
                total,
            });
        }
        t.bytes.extend_from_slice(data);
        t.touched = now;
        Ok(())
    }

    /// Takes the complete transfer `(from, id)`.
    pub(crate) fn take(&mut self, key: (NodeId, u64)) -> Result<Vec<u8>, StagingError> {
        let t = self
            .transfers
            .remove(&key)
            .ok_or(StagingError::Unknown(key.1))?;
        if t.bytes.len() != t.total {
            return Err(StagingError::Incomplete {
                transfer: key.1,
                got: t.bytes.len(),
                total: t.total,
            });
        }
        Ok(t.bytes)
    }

    /// Drops transfers not added to for `quiet`.
    pub(crate) fn purge(&mut self, now: Instant, quiet: Duration) {
        self.transfers
            .retain(|_, t| now.saturating_duration_since(t.touched) < quiet);
    }

    /// Number of transfers under way.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.transfers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: u64, total: u64, data: &[u8]) -> Part<'_> {
        Part {
            offset,
            total,
            data,
        }
    }

    fn node() -> NodeId {
        NodeId::new(([127, 0, 0, 1], 9).into(), 1)
    }

    #[test]
    fn parts_in_order_make_the_whole() {
        let mut s = Staging::default();
        let now = Instant::now();
        s.stage((node(), 1), part(0, 6, b"abc"), 100, now).unwrap();
        assert!(s.take((node(), 1)).is_err(), "incomplete");
        s.stage((node(), 2), part(0, 6, b"abc"), 100, now).unwrap();
        s.stage((node(), 2), part(3, 6, b"def"), 100, now).unwrap();
        assert_eq!(s.take((node(), 2)).unwrap(), b"abcdef");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn bad_parts_drop_the_transfer() {
        let mut s = Staging::default();
        let now = Instant::now();
        assert!(
            s.stage((node(), 1), part(0, 1000, b"a"), 100, now).is_err(),
            "over max"
        );
        s.stage((node(), 1), part(0, 4, b"ab"), 100, now).unwrap();
        assert!(
            s.stage((node(), 1), part(3, 4, b"c"), 100, now).is_err(),
            "a gap"
        );
        assert_eq!(s.len(), 0);
        s.stage((node(), 1), part(0, 4, b"ab"), 100, now).unwrap();
        assert!(
            s.stage((node(), 1), part(2, 4, b"cde"), 100, now).is_err(),
            "overrun"
        );
        assert!(
            s.stage((node(), 7), part(2, 4, b"cd"), 100, now).is_err(),
            "unknown"
        );
        assert!(s.take((node(), 7)).is_err());
    }

    #[test]
    fn quiet_transfers_are_dropped() {
        let mut s = Staging::default();
        let now = Instant::now();
        s.stage((node(), 1), part(0, 4, b"ab"), 100, now).unwrap();
        s.purge(now + Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(s.len(), 1);
        s.purge(now + Duration::from_secs(6), Duration::from_secs(5));
        assert_eq!(s.len(), 0);
    }
}
