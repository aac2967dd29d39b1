//! Longest-prefix match from a source address to a caller-chosen value, for
//! IPv4 and IPv6; built once, read-only afterwards.
//!
//! Owns only the lookup structure. View semantics, duplicate detection and
//! ECS scope rules live in the parent module.
//!
//! # How it works
//! The stored prefixes are flattened at build time into sorted, disjoint
//! address ranges, each carrying the longest prefix that covers it
//! ("leaf pushing"). A lookup is a radix index on the first `index_bits` bits
//! below the prefixes' common prefix, then a (usually one- or two-step) binary
//! search among the few ranges that start in that bucket: two or three memory
//! reads, whatever the number of prefixes. `benches/lpm.rs` compares it with
//! the `prefix-trie` crate (also this module's test oracle) and a linear scan.
//!
//! For lookups limited to prefixes no longer than `max_len` (EDNS Client
//! Subnet: the resolver told us only that many bits), each range also names
//! its prefix, and each prefix its parent (the next shorter stored prefix
//! covering it), so the answer is found by walking up at most a few parents.

/// Largest `value` a prefix can carry (23 bits).
pub const MAX_VALUE: u32 = (1 << 23) - 1;

const NONE: u32 = u32::MAX;

/// An unsigned integer holding an address (u32 for IPv4, u128 for IPv6).
pub trait Key: Copy + Ord + Eq + std::fmt::Debug {
    const BITS: u8;
    const ZERO: Self;
    /// Bits past `len` cleared.
    fn mask(self, len: u8) -> Self;
    /// Bits past `len` set (the last address of the prefix).
    fn last(self, len: u8) -> Self;
    /// `self + 1`, `None` on overflow.
    fn succ(self) -> Option<Self>;
    /// `self - 1`, `None` on underflow.
    fn pred(self) -> Option<Self>;
    /// The `n` bits starting at bit `from` (0 = most significant), as an index.
    fn bits(self, from: u8, n: u8) -> usize;
    /// Build from an index placed at bit `from` on top of `base`.
    fn with_bits(base: Self, from: u8, n: u8, index: usize) -> Self;
    /// Number of leading bits `self` and `other` share.
    fn common(self, other: Self) -> u8;
}

macro_rules! impl_key {
    ($t:ty) => {
        impl Key for $t {
            const BITS: u8 = <$t>::BITS as u8;
            const ZERO: Self = 0;
            #[inline]
            fn mask(self, len: u8) -> Self {
                if len == 0 {
                    0
                } else if len >= <Self as Key>::BITS {
                    self
                } else {
                    self & (<$t>::MAX << (<Self as Key>::BITS - len))
                }
            }
            #[inline]
            fn last(self, len: u8) -> Self {
                if len >= <Self as Key>::BITS {
                    self
                } else {
                    self | (<$t>::MAX >> len)
                }
            }
            #[inline]
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }
            #[inline]
            fn pred(self) -> Option<Self> {
                self.checked_sub(1)
            }
            #[inline]
            fn bits(self, from: u8, n: u8) -> usize {
                if n == 0 || from >= <Self as Key>::BITS {
                    return 0;
                }
                let v = self << from;
                (v >> (<Self as Key>::BITS - n)) as usize
            }
            #[inline]
            fn with_bits(base: Self, from: u8, n: u8, index: usize) -> Self {
                if n == 0 {
                    return base;
                }
                base | ((index as $t) << (<Self as Key>::BITS - from - n))
            }
            #[inline]
            fn common(self, other: Self) -> u8 {
                (self ^ other).leading_zeros() as u8
            }
        }
    };
}
impl_key!(u32);
impl_key!(u128);

/// Clear the bits of `addr` past `len` (IPv4).
#[inline]
pub fn mask_v4(addr: u32, len: u8) -> u32 {
    addr.mask(len)
}

/// Clear the bits of `addr` past `len` (IPv6).
#[inline]
pub fn mask_v6(addr: u128, len: u8) -> u128 {
    addr.mask(len)
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Length of the matched prefix.
    pub len: u8,
    /// The value stored with it.
    pub value: u32,
    /// Some stored prefix strictly inside the matched one carries a
    /// different value (so the answer does not hold for the whole prefix).
    pub nested_differs: bool,
}

#[inline]
fn pack(len: u8, value: u32, nested: bool) -> u32 {
    ((len as u32 + 1) << 24) | ((nested as u32) << 23) | value
}

#[inline]
fn unpack(p: u32) -> Option<Match> {
    if p == 0 {
        return None;
    }
    Some(Match {
        len: ((p >> 24) - 1) as u8,
        value: p & MAX_VALUE,
        nested_differs: p & (1 << 23) != 0,
    })
}

/// The value a packed range answers, NONE when no prefix covers it.
#[inline]
fn value_of(packed: u32) -> u32 {
    if packed == 0 {
        NONE
    } else {
        packed & MAX_VALUE
    }
}

#[derive(Debug, Clone, Copy)]
struct PrefixInfo {
    packed: u32,
    parent: u32,
}

/// LPM table for one address family.
#[derive(Debug, Clone)]
pub struct Table<K: Key> {
    /// Every stored prefix lies inside `base/shift`.
    base: K,
    shift: u8,
    index_bits: u8,
    /// `index[h]` = position of the last range starting at or before the
    /// first address of bucket `h`; `index.len() == 2^index_bits + 1`.
    index: Vec<u32>,
    /// Range starts (sorted) with the packed match of the range.
    ranges: Vec<(K, u32)>,
    /// Per range: which prefix decided it (index into `prefixes`), or NONE.
    range_prefix: Vec<u32>,
    /// Per range: the first and last range of the run of neighbouring
    /// ranges answering the same value (for [`Table::uniform_len`]).
    run: Vec<(u32, u32)>,
    prefixes: Vec<PrefixInfo>,
}

impl<K: Key> Default for Table<K> {
    fn default() -> Self {
        Table {
            base: K::ZERO,
            shift: 0,
            index_bits: 0,
            index: Vec::new(),
            ranges: Vec::new(),
            range_prefix: Vec::new(),
            run: Vec::new(),
            prefixes: Vec::new(),
        }
    }
}

impl<K: Key> Table<K> {
    /// Build from `(address, len, value)` triples. Host bits are cleared;
    /// when the same prefix appears more than once the first one wins.
    /// Values above [`MAX_VALUE`] are truncated to 23 bits: callers check.
    pub fn build(mut entries: Vec<(K, u8, u32)>) -> Self {
        for e in entries.iter_mut() {
            e.1 = e.1.min(K::BITS);
            e.0 = e.0.mask(e.1);
            e.2 &= MAX_VALUE;
        }
        // Sorted by start, then shorter first, so a parent precedes its children.
        entries.sort_by_key(|e| (e.0, e.1));
        entries.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
        if entries.is_empty() {
            return Self::default();
        }

        // Common block of all prefixes.
        let mut shift = entries.iter().map(|e| e.1).min().unwrap_or(0);
        let first = entries[0].0;
        for e in &entries {
            shift = shift.min(first.common(e.0));
        }
        let base = first.mask(shift);

        // Parents and "nested prefix with a different value" flags, by a
        // sweep with a stack of open (enclosing) prefixes.
        let n = entries.len();
        let mut parent = vec![NONE; n];
        let mut nested = vec![false; n];
        let mut stack: Vec<usize> = Vec::with_capacity(K::BITS as usize + 1);
        for i in 0..n {
            let (a, _, v) = entries[i];
            while let Some(&top) = stack.last() {
                let (ta, tl, _) = entries[top];
                if a.mask(tl) == ta {
                    break;
                }
                stack.pop();
            }
            if let Some(&top) = stack.last() {
                parent[i] = top as u32;
                if entries[top].2 != v {
                    nested[top] = true;
                }
            }
            stack.push(i);
        }
        // Propagate flags upward: a differing grandchild makes the
        // grandparent differ too (children come after parents, so walk back).
        for i in (0..n).rev() {
            let p = parent[i];
            if p != NONE && nested[i] {
                nested[p as usize] = true;
            }
        }
        let prefixes: Vec<PrefixInfo> = (0..n)
            .map(|i| PrefixInfo {
                packed: pack(entries[i].1, entries[i].2, nested[i]),
                parent: parent[i],
            })
            .collect();

        // Flatten to disjoint ranges covering the block base/shift.
        let mut ranges: Vec<(K, u32)> = Vec::with_capacity(n * 2 + 1);
        let mut range_prefix: Vec<u32> = Vec::with_capacity(n * 2 + 1);
        let mut emit = |start: K, pidx: u32| {
            let packed = if pidx == NONE {
                0
            } else {
                prefixes[pidx as usize].packed
            };
            if let Some(&(_, last)) = ranges.last() {
                if last == packed && range_prefix.last() == Some(&pidx) {
                    return;
                }
            }
            ranges.push((start, packed));
            range_prefix.push(pidx);
        };
        let block_last = base.last(shift);
        // `cur`: first address not yet emitted; None once past the end.
        let mut cur: Option<K> = Some(base);
        stack.clear();
        for i in 0..n {
            let (a, _, _) = entries[i];
            // Close enclosing prefixes that end before this one starts.
            while let Some(&top) = stack.last() {
                let (ta, tl, _) = entries[top];
                if a.mask(tl) == ta {
                    break;
                }
                let end = ta.last(tl);
                if let Some(c) = cur {
                    if c <= end {
                        emit(c, top as u32);
                        cur = end.succ();
                    }
                }
                stack.pop();
            }
            if let Some(c) = cur {
                if c < a {
                    let under = stack.last().map(|&t| t as u32).unwrap_or(NONE);
                    emit(c, under);
                }
            }
            cur = Some(a);
            stack.push(i);
        }
        while let Some(top) = stack.pop() {
            let (ta, tl, _) = entries[top];
            let end = ta.last(tl);
            if let Some(c) = cur {
                if c <= end {
                    emit(c, top as u32);
                    cur = end.succ();
                }
            }
        }
        if let Some(c) = cur {
            if c <= block_last {
                emit(c, NONE);
            }
        }

        // Radix index over the bits below the common prefix.
        let free_bits = K::BITS - shift;
        let want = (usize::BITS - ranges.len().leading_zeros()).clamp(1, 20) as u8;
        let index_bits = want.min(free_bits);
        let buckets = 1usize << index_bits;
        let mut index = Vec::with_capacity(buckets + 1);
        let mut r = 0usize;
        for h in 0..buckets {
            let start = K::with_bits(base, shift, index_bits, h);
            while r + 1 < ranges.len() && ranges[r + 1].0 <= start {
                r += 1;
            }
            index.push(r as u32);
        }
        index.push((ranges.len() - 1) as u32);

        // Runs of neighbouring ranges with the same value.
        let mut run: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for i in 0..ranges.len() {
            let first = match run.last() {
                Some(&(f, _)) if value_of(ranges[i - 1].1) == value_of(ranges[i].1) => f,
                _ => i as u32,
            };
            run.push((first, i as u32));
        }
        let mut last = ranges.len() as u32 - 1;
        for i in (0..ranges.len()).rev() {
            if i + 1 < ranges.len() && value_of(ranges[i + 1].1) != value_of(ranges[i].1) {
                last = i as u32;
            }
            run[i].1 = last;
        }

        Table {
            base,
            shift,
            index_bits,
            index,
            ranges,
            range_prefix,
            run,
            prefixes,
        }
    }

    /// Position of the range containing `addr`, if `addr` is in the block.
    #[inline(always)]
    fn range_of(&self, addr: K) -> Option<usize> {
        if self.ranges.is_empty() || addr.mask(self.shift) != self.base {
            return None;
        }
        let h = addr.bits(self.shift, self.index_bits);
        // Both reads are in bounds: index has 2^index_bits + 1 entries.
        let lo = *self.index.get(h)? as usize;
        let hi = *self.index.get(h + 1)? as usize;
        let slice = self.ranges.get(lo..=hi)?;
        // slice[0].0 <= addr holds by construction, so the count is >= 1.
        let n = slice.partition_point(|r| r.0 <= addr);
        Some(lo + n.max(1) - 1)
    }

    /// Longest stored prefix covering `addr`.
    #[inline]
    pub fn lookup(&self, addr: K) -> Option<Match> {
        let r = self.range_of(addr)?;
        unpack(self.ranges.get(r)?.1)
    }

    /// Longest stored prefix no longer than `max_len` covering `addr`.
    pub fn lookup_limited(&self, addr: K, max_len: u8) -> Option<Match> {
        if max_len >= K::BITS {
            return self.lookup(addr);
        }
        let addr = addr.mask(max_len);
        let r = self.range_of(addr)?;
        let mut p = *self.range_prefix.get(r)?;
        while p != NONE {
            let info = self.prefixes.get(p as usize)?;
            let m = unpack(info.packed)?;
            if m.len <= max_len {
                return Some(m);
            }
            p = info.parent;
        }
        None
    }

    /// The shortest prefix length `l` such that every address of
    /// `addr/l` gets the same lookup value as `addr` (whatever prefix
    /// decides it): the widest block an answer for `addr` holds for.
    /// Addresses no stored prefix covers count as one value. At most
    /// `K::BITS + 1` comparisons after one lookup.
    pub fn uniform_len(&self, addr: K) -> u8 {
        if self.ranges.is_empty() {
            return 0;
        }
        let Some(r) = self.range_of(addr) else {
            // Outside the block every address misses: the largest aligned
            // block around `addr` that stays clear of `base/shift`.
            return (addr.common(self.base) + 1).min(K::BITS);
        };
        let (first, last) = self.run.get(r).copied().unwrap_or((r as u32, r as u32));
        let unmatched = self.ranges.get(r).map_or(0, |x| x.1) == 0;
        // Inclusive bounds of the uniform run; `None` = unbounded (an
        // unmatched run touching the block's edge goes on outside it).
        let lo = if first == 0 && unmatched {
            None
        } else {
            self.ranges.get(first as usize).map(|x| x.0)
        };
        let hi = match self.ranges.get(last as usize + 1) {
            Some(next) => next.0.pred(),
            None if unmatched => None,
            None => Some(self.base.last(self.shift)),
        };
        for l in 0..K::BITS {
            if lo.is_none_or(|lo| addr.mask(l) >= lo) && hi.is_none_or(|hi| addr.last(l) <= hi) {
                return l;
            }
        }
        K::BITS
    }

    /// Number of distinct prefixes stored.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Number of disjoint ranges the prefixes flattened into.
    pub fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// Approximate heap bytes used.
    pub fn mem_size(&self) -> usize {
        self.index.capacity() * 4
            + self.ranges.capacity() * std::mem::size_of::<(K, u32)>()
            + self.range_prefix.capacity() * 4
            + self.run.capacity() * 8
            + self.prefixes.capacity() * std::mem::size_of::<PrefixInfo>()
    }
}

/// LPM tables for both families.
#[derive(Debug, Clone, Default)]
pub struct Lpm {
    pub v4: Table<u32>,
    pub v6: Table<u128>,
}

impl Lpm {
    pub fn build(v4: Vec<(u32, u8, u32)>, v6: Vec<(u128, u8, u32)>) -> Self {
        Lpm {
            v4: Table::build(v4),
            v6: Table::build(v6),
        }
    }

    pub fn mem_size(&self) -> usize {
        self.v4.mem_size() + self.v6.mem_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefix_trie::PrefixMap;
    use proptest::prelude::*;

    fn oracle4(entries: &[(u32, u8, u32)]) -> PrefixMap<(u32, u8), u32> {
        let mut m = PrefixMap::new();
        for &(a, l, v) in entries {
            let l = l.min(32);
            m.entry((a.mask(l), l)).or_insert(v);
        }
        m
    }

    fn oracle6(entries: &[(u128, u8, u32)]) -> PrefixMap<(u128, u8), u32> {
        let mut m = PrefixMap::new();
        for &(a, l, v) in entries {
            let l = l.min(128);
            m.entry((a.mask(l), l)).or_insert(v);
        }
        m
    }

    /// Reference for the nested-differs flag: any stored prefix strictly
    /// inside `p` with a different value.
    fn nested_differs4(m: &PrefixMap<(u32, u8), u32>, p: (u32, u8), v: u32) -> bool {
        m.children(&p).any(|(q, w)| q != p && *w != v)
    }

    fn check4(entries: &[(u32, u8, u32)], probes: &[u32]) {
        let t = Table::<u32>::build(entries.to_vec());
        let o = oracle4(entries);
        assert_eq!(t.len(), o.len());
        for &a in probes {
            for max in [32u8, 31, 24, 16, 8, 0] {
                let want = o.get_lpm(&(a.mask(max), max));
                let got = t.lookup_limited(a, max);
                match (want, got) {
                    (None, None) => {}
                    (Some(((pa, pl), v)), Some(m)) => {
                        assert_eq!((pl, *v), (m.len, m.value), "addr {a:#x} max {max}");
                        assert_eq!(
                            m.nested_differs,
                            nested_differs4(&o, (pa, pl), *v),
                            "nested flag of {pa:#x}/{pl}"
                        );
                    }
                    (w, g) => panic!("addr {a:#x} max {max}: oracle {w:?} got {g:?}"),
                }
            }
        }
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t = Table::<u32>::build(vec![]);
        assert_eq!(t.lookup(0), None);
        assert_eq!(t.lookup(u32::MAX), None);
        assert_eq!(t.lookup_limited(5, 3), None);
    }

    #[test]
    fn longest_prefix_wins_and_exact_host_entries() {
        let e = vec![
            (0x0a00_0000, 8, 1),  // 10/8
            (0x0a01_0000, 16, 2), // 10.1/16
            (0x0a01_0007, 32, 3), // 10.1.0.7/32
            (0xffff_ffff, 32, 4), // top address
            (0, 0, 5),            // default route
        ];
        let t = Table::<u32>::build(e.clone());
        assert_eq!(
            t.lookup(0x0a01_0007).map(|m| (m.len, m.value)),
            Some((32, 3))
        );
        assert_eq!(
            t.lookup(0x0a01_0008).map(|m| (m.len, m.value)),
            Some((16, 2))
        );
        assert_eq!(
            t.lookup(0x0a02_0000).map(|m| (m.len, m.value)),
            Some((8, 1))
        );
        assert_eq!(
            t.lookup(0x0b00_0000).map(|m| (m.len, m.value)),
            Some((0, 5))
        );
        assert_eq!(
            t.lookup(0xffff_ffff).map(|m| (m.len, m.value)),
            Some((32, 4))
        );
        assert_eq!(
            t.lookup(0xffff_fffe).map(|m| (m.len, m.value)),
            Some((0, 5))
        );
        // limited: a /24 ECS subnet cannot select the /32 entry
        assert_eq!(
            t.lookup_limited(0x0a01_0007, 24).map(|m| (m.len, m.value)),
            Some((16, 2))
        );
        assert!(t.lookup(0x0a00_0001).unwrap().nested_differs);
        assert!(!t.lookup(0x0a01_0007).unwrap().nested_differs);
        check4(
            &e,
            &[
                0,
                1,
                0x0a01_0007,
                0x0a01_ffff,
                0x0aff_ffff,
                u32::MAX,
                0x8000_0000,
            ],
        );
    }

    #[test]
    fn addresses_outside_the_common_block_miss() {
        let e = vec![(0x0a01_0200, 24, 1), (0x0a01_0300, 24, 2)];
        let t = Table::<u32>::build(e.clone());
        assert_eq!(t.lookup(0x0a01_0100), None);
        assert_eq!(t.lookup(0x0b01_0200), None);
        assert_eq!(t.lookup(0x0a01_0304).map(|m| m.value), Some(2));
        check4(&e, &[0x0a01_0100, 0x0a01_0200, 0x0a01_03ff, 0x0a01_0400]);
    }

    #[test]
    fn single_host_and_duplicates_keep_first() {
        let e = vec![(7, 32, 1), (7, 32, 9)];
        let t = Table::<u32>::build(e);
        assert_eq!(t.lookup(7).map(|m| m.value), Some(1));
        assert_eq!(t.lookup(6), None);
        assert_eq!(t.lookup(8), None);
    }

    #[test]
    fn ipv6_basics() {
        let p = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().unwrap());
        let e = vec![
            (p("fd00::"), 8, 1),
            (p("fd00:1::"), 32, 2),
            (p("fd00:1::5"), 128, 3),
        ];
        let t = Table::<u128>::build(e.clone());
        assert_eq!(t.lookup(p("fd00:1::5")).map(|m| m.value), Some(3));
        assert_eq!(t.lookup(p("fd00:1::6")).map(|m| m.value), Some(2));
        assert_eq!(t.lookup(p("fd77::")).map(|m| m.value), Some(1));
        assert_eq!(t.lookup(p("fe00::")), None);
        assert_eq!(
            t.lookup_limited(p("fd00:1::5"), 64).map(|m| m.value),
            Some(2)
        );
        let o = oracle6(&e);
        assert_eq!(o.len(), t.len());
    }

    /// Oracle for `uniform_len`: the lookup value changes only at the
    /// first address of a stored prefix or just past its last one, so
    /// `addr/l` is uniform iff every such point inside it (and its first
    /// address) gets the value `addr` gets.
    fn uniform_oracle4(entries: &[(u32, u8, u32)], addr: u32, l: u8) -> bool {
        let o = oracle4(entries);
        let val = |a: u32| o.get_lpm(&(a, 32)).map(|(_, v)| *v);
        let want = val(addr);
        let (lo, hi) = (addr.mask(l), addr.last(l));
        let mut points = vec![lo];
        for &(a, pl, _) in entries {
            let pl = pl.min(32);
            points.push(a.mask(pl));
            if let Some(s) = a.last(pl).succ() {
                points.push(s);
            }
        }
        points
            .into_iter()
            .filter(|&p| p >= lo && p <= hi)
            .all(|p| val(p) == want)
    }

    #[test]
    fn uniform_len_excludes_nested_prefixes_with_other_values() {
        // 10.1/16 and 10.2/16 carry values; 10.0.0.0/12 as a whole does not
        // answer like its first address: the block that does is 10.0/16.
        let e = vec![(0x0a01_0000, 16, 1), (0x0a02_0000, 16, 2)];
        let t = Table::<u32>::build(e.clone());
        assert_eq!(t.uniform_len(0x0a00_0000), 16);
        assert_eq!(t.uniform_len(0x0a01_0000), 16);
        assert_eq!(t.uniform_len(0x0a03_0000), 16);
        assert_eq!(t.uniform_len(0x0a04_0000), 14);
        assert_eq!(t.uniform_len(0x0b00_0000), 8, "outside the block");
        assert_eq!(t.uniform_len(0x8000_0000), 1, "far outside the block");
        // a /32 inside a /16 of another value
        let e = vec![(0x0a01_0000, 16, 1), (0x0a01_0007, 32, 2)];
        let t = Table::<u32>::build(e.clone());
        assert_eq!(t.uniform_len(0x0a01_0000), 30);
        assert_eq!(t.uniform_len(0x0a01_0006), 32);
        assert_eq!(t.uniform_len(0x0a01_0007), 32);
        assert_eq!(t.uniform_len(0x0a01_0008), 29);
        assert_eq!(t.uniform_len(0x0a01_8000), 17);
        // the same value nested: no split needed
        let e = vec![(0x0a01_0000, 16, 1), (0x0a01_0007, 32, 1)];
        let t = Table::<u32>::build(e);
        assert_eq!(t.uniform_len(0x0a01_0000), 16);
        assert_eq!(Table::<u32>::build(vec![]).uniform_len(0x0a01_0000), 0);
    }

    fn arb_v4_entries() -> impl Strategy<Value = Vec<(u32, u8, u32)>> {
        // Clustered addresses so prefixes nest and collide often.
        let addr = prop_oneof![
            any::<u32>(),
            (0u32..64).prop_map(|x| 0x0a00_0000 | (x << 6)),
            (0u32..256).prop_map(|x| 0x0a01_0000 | x),
        ];
        prop::collection::vec((addr, 0u8..=33, 0u32..4), 0..60)
    }

    proptest! {
        #[test]
        fn v4_matches_prefix_trie(entries in arb_v4_entries(), probes in prop::collection::vec(
            prop_oneof![any::<u32>(), (0u32..4096).prop_map(|x| 0x0a00_0000 | x),
                        (0u32..256).prop_map(|x| 0x0a01_0000 | x)], 1..40)) {
            let mut probes = probes;
            // also probe every range boundary
            for &(a, l, _) in &entries {
                let l = l.min(32);
                probes.push(a.mask(l));
                probes.push(a.last(l));
                if let Some(s) = a.last(l).succ() { probes.push(s); }
                probes.push(a.mask(l).wrapping_sub(1));
            }
            check4(&entries, &probes);
        }

        #[test]
        fn uniform_len_is_the_widest_uniform_block(entries in arb_v4_entries(), probes in prop::collection::vec(
            prop_oneof![any::<u32>(), (0u32..4096).prop_map(|x| 0x0a00_0000 | x),
                        (0u32..256).prop_map(|x| 0x0a01_0000 | x)], 1..10)) {
            let t = Table::<u32>::build(entries.clone());
            for a in probes {
                let l = t.uniform_len(a);
                prop_assert!(uniform_oracle4(&entries, a, l), "{a:#x}/{l} is not uniform");
                if l > 0 {
                    prop_assert!(!uniform_oracle4(&entries, a, l - 1), "{a:#x}/{} is uniform too", l - 1);
                }
            }
        }

        #[test]
        fn v6_matches_prefix_trie(entries in prop::collection::vec(
                (prop_oneof![any::<u128>(), (0u128..4096).prop_map(|x| (0xfdu128 << 120) | (x << 60))],
                 0u8..=129, 0u32..4), 0..40),
            probes in prop::collection::vec(any::<u128>(), 1..20)) {
            let t = Table::<u128>::build(entries.clone());
            let o = oracle6(&entries);
            let mut probes = probes;
            for &(a, l, _) in &entries {
                let l = l.min(128);
                probes.push(a.mask(l));
                probes.push(a.last(l));
                if let Some(s) = a.last(l).succ() { probes.push(s); }
            }
            for a in probes {
                for max in [128u8, 64, 48, 0] {
                    let want = o.get_lpm(&(a.mask(max), max)).map(|((_, l), v)| (l, *v));
                    let got = t.lookup_limited(a, max).map(|m| (m.len, m.value));
                    prop_assert_eq!(want, got);
                }
            }
        }
    }
}
