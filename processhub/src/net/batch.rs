//! Splitting items into runs that fit a frame.

use crate::core::entry::Entry;
use crate::core::item::StartItem;

/// Splits `items` into runs of at most `count` items and at most `bytes` bytes as
/// measured by `size` (a single item larger than `bytes` makes a run of its own).
pub(crate) fn batches<'a, T>(
    items: &'a [T],
    count: usize,
    bytes: usize,
    size: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut total = 0;
        while n < rest.len() && n < count {
            let s = size(&rest[n]);
            if n > 0 && total + s > bytes {
                break;
            }
            total += s;
            n += 1;
        }
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

/// Roughly the encoded size of a registry entry.
pub(crate) fn entry_size((id, e): &(String, Entry)) -> usize {
    id.len() + e.type_name.len() + e.start_state.len() + 64
}

/// Roughly the encoded size of a start item.
pub(crate) fn item_size(item: &StartItem) -> usize {
    item.id.len()
        + item.type_name.len()
        + item.state.len()
        + item.start_state.as_ref().map_or(0, |s| s.len())
        + 32
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn runs_are_bounded_by_count_and_by_bytes() {
        let sizes = [1, 2, 3, 10, 1, 1, 1, 1];
        let runs: Vec<&[usize]> = batches(&sizes, 3, 5, |s| *s).collect();
        assert_eq!(
            runs,
            vec![&[1, 2][..], &[3][..], &[10][..], &[1, 1, 1][..], &[1][..]]
        );
        assert_eq!(batches(&[] as &[usize], 3, 5, |s| *s).count(), 0);
    }
}
