//! What one slot word holds, and how it is packed.
//!
//! A slot is one pointer-sized atomic. Items are at least 8-byte aligned, so the three low
//! bits are free; the top 16 bits of a user-space pointer are zero on every 64-bit target
//! we run on, so they carry a tag from the item's hash, and a probe rejects most other keys
//! without touching their items. The small values below 8 are the states that hold no item.
//!
//! ```text
//!  EMPTY ──insert──▶ item ──unlink (chain ends removed)──▶ TOMB
//!    │                 │ ├─unlink (chain goes on)──▶ item' (same key)
//!    │                 │ └─a store of the key (chain ended removed)──▶ item' (same key)
//!    │ migration       │ migration: freeze
//!    ▼                 ▼
//!  FROZEN_EMPTY      item|FROZEN ──copied──▶ MOVED(index in the next generation)
//!                                └─not copied (removed)──▶ MOVED_DEAD
//!  TOMB, RESERVED ──migration──▶ MOVED_DEAD
//!  EMPTY ──a copier reserves it──▶ RESERVED ──filled──▶ item  (or ──abandoned──▶ TOMB)
//! ```

use crate::sync::Ordering;

// The tag needs the top 16 bits of a 64-bit pointer (and a target whose allocator leaves them
// zero: no pointer tagging in user space).
#[cfg(not(target_pointer_width = "64"))]
compile_error!("download-buffer's table packs a tag into the top 16 bits of a pointer: 64-bit targets only");

/// Set on an item's word once a migration has frozen it: nobody writes it again but the
/// migration, which finalizes it to [`Word::Moved`].
const FROZEN: usize = 0b001;
const LOW_BITS: usize = 0b111;
const TAG_SHIFT: u32 = 48;
const ADDRESS: usize = (1 << TAG_SHIFT) - 1;

const EMPTY: usize = 0;
/// An empty slot is a null pointer, so zeroed memory is an array of empty slots (loom's
/// atomics are not plain memory: its arrays are built slot by slot).
#[cfg(not(crossbeam_loom))]
pub(crate) const EMPTY_IS_NULL: bool = EMPTY == 0;
const FROZEN_EMPTY: usize = FROZEN;
const TOMB: usize = 0b010;
const RESERVED: usize = 0b100;
/// Low bits of a finalized word; the rest is the index in the next generation plus one
/// (zero: nothing was copied).
const MOVED_BITS: usize = 0b011;

/// One slot word, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Word<T> {
    /// Never used: ends a probe chain.
    Empty,
    /// An empty slot frozen by a migration: ends the chain here; the key may be in the
    /// next generation.
    FrozenEmpty,
    /// A dead slot (an unlinked item's, or a reservation given up): the chain goes on.
    Tomb,
    /// Reserved by a copier for the item its ticket names; filled or given up later.
    Reserved,
    /// Finalized by a migration: what it held is in the next generation, at `Some(index)`
    /// (the slot the copy landed in, whatever that slot holds now), or nowhere.
    Moved(Option<usize>),
    /// An item, with the tag of its hash, maybe frozen.
    Item { item: *mut T, tag: u16, frozen: bool },
}

/// The tag of a hash: its top 16 bits (the index uses the low bits).
pub(crate) fn tag_of(hash: u64) -> u16 {
    (hash >> 48) as u16
}

/// The raw word of an unfrozen item with `tag`.
pub(crate) fn item_word<T>(item: *mut T, tag: u16) -> *mut T {
    // Checked in release builds too (one test and branch per store): an allocator that tags
    // its pointers' top bits would otherwise make `decode` hand out a wild pointer.
    assert!(
        item.addr() & (!ADDRESS | LOW_BITS) == 0,
        "an item address {:#x} uses the top 16 or the low 3 bits",
        item.addr()
    );
    item.map_addr(|address| address | (tag as usize) << TAG_SHIFT)
}

fn special<T>(value: usize) -> *mut T {
    std::ptr::null_mut::<T>().map_addr(|_| value)
}

#[cfg_attr(not(crossbeam_loom), allow(dead_code))] // zeroed memory is used instead
pub(crate) fn empty<T>() -> *mut T {
    special(EMPTY)
}

pub(crate) fn frozen_empty<T>() -> *mut T {
    special(FROZEN_EMPTY)
}

pub(crate) fn tomb<T>() -> *mut T {
    special(TOMB)
}

pub(crate) fn reserved<T>() -> *mut T {
    special(RESERVED)
}

/// The finalized word: copied to `index` in the next generation, or (`None`) not copied.
pub(crate) fn moved<T>(index: Option<usize>) -> *mut T {
    special(index.map_or(0, |index| index + 1) << 3 | MOVED_BITS)
}

/// The frozen form of an unfrozen item word.
pub(crate) fn frozen<T>(word: *mut T) -> *mut T {
    word.map_addr(|address| address | FROZEN)
}

pub(crate) fn decode<T>(word: *mut T) -> Word<T> {
    let raw = word.addr();
    match raw {
        EMPTY => Word::Empty,
        FROZEN_EMPTY => Word::FrozenEmpty,
        TOMB => Word::Tomb,
        RESERVED => Word::Reserved,
        _ if raw & LOW_BITS == MOVED_BITS => Word::Moved((raw >> 3).checked_sub(1)),
        _ => Word::Item {
            item: word.map_addr(|address| address & ADDRESS & !LOW_BITS),
            tag: (raw >> TAG_SHIFT) as u16,
            frozen: raw & FROZEN != 0,
        },
    }
}

/// Loads of slot words: Acquire, so that an item found is seen initialized (its publishing
/// CAS is Release), and a frozen word makes the next generation visible (the freezer read
/// it before its Release CAS). Broken on purpose only under
/// `--cfg loom_broken="relaxed_find"`.
pub(crate) const LOAD: Ordering =
    if cfg!(loom_broken = "relaxed_find") { Ordering::Relaxed } else { Ordering::Acquire };

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_decodes_to_itself() {
        let mut backing = 0u64;
        let item: *mut u64 = &mut backing;
        assert_eq!(decode(empty::<u64>()), Word::Empty);
        assert_eq!(decode(frozen_empty::<u64>()), Word::FrozenEmpty);
        assert_eq!(decode(tomb::<u64>()), Word::Tomb);
        assert_eq!(decode(reserved::<u64>()), Word::Reserved);
        assert_eq!(decode(moved::<u64>(None)), Word::Moved(None));
        assert_eq!(decode(moved::<u64>(Some(0))), Word::Moved(Some(0)));
        assert_eq!(decode(moved::<u64>(Some(1 << 40))), Word::Moved(Some(1 << 40)));
        let word = item_word(item, 0xbeef);
        assert_eq!(decode(word), Word::Item { item, tag: 0xbeef, frozen: false });
        assert_eq!(decode(frozen(word)), Word::Item { item, tag: 0xbeef, frozen: true });
        assert_eq!(tag_of(0xbeef_0000_0000_0001), 0xbeef);
    }
}
