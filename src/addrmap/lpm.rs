//! Longest-prefix match from a source address to a view, over IPv4 and IPv6.
//!
//! Owns only the lookup structure: it maps prefixes (stored as `(bits, len)`,
//! host bits cleared) to a `u32` value chosen by the caller. Duplicate
//! detection, view semantics and ECS scope rules live in the parent module.

use prefix_trie::PrefixMap;

/// A longest-prefix-match table for both address families.
#[derive(Clone, Default)]
pub struct Lpm {
    v4: PrefixMap<(u32, u8), u32>,
    v6: PrefixMap<(u128, u8), u32>,
}

impl std::fmt::Debug for Lpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpm")
            .field("v4_prefixes", &self.v4.len())
            .field("v6_prefixes", &self.v6.len())
            .finish()
    }
}

/// Clear the bits of `addr` past `len` (IPv4).
#[inline]
pub fn mask_v4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else if len >= 32 {
        addr
    } else {
        addr & (u32::MAX << (32 - len))
    }
}

/// Clear the bits of `addr` past `len` (IPv6).
#[inline]
pub fn mask_v6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else if len >= 128 {
        addr
    } else {
        addr & (u128::MAX << (128 - len))
    }
}

impl Lpm {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert `addr/len` (host bits are cleared); returns the previous value.
    pub fn insert_v4(&mut self, addr: u32, len: u8, value: u32) -> Option<u32> {
        let len = len.min(32);
        self.v4.insert((mask_v4(addr, len), len), value)
    }

    /// Insert `addr/len` (host bits are cleared); returns the previous value.
    pub fn insert_v6(&mut self, addr: u128, len: u8, value: u32) -> Option<u32> {
        let len = len.min(128);
        self.v6.insert((mask_v6(addr, len), len), value)
    }

    /// Longest stored prefix of length `<= max_len` covering `addr`:
    /// `(prefix length, value)`.
    #[inline]
    pub fn lookup_v4(&self, addr: u32, max_len: u8) -> Option<(u8, u32)> {
        let len = max_len.min(32);
        self.v4
            .get_lpm(&(mask_v4(addr, len), len))
            .map(|((_, l), v)| (l, *v))
    }

    /// Longest stored prefix of length `<= max_len` covering `addr`:
    /// `(prefix length, value)`.
    #[inline]
    pub fn lookup_v6(&self, addr: u128, max_len: u8) -> Option<(u8, u32)> {
        let len = max_len.min(128);
        self.v6
            .get_lpm(&(mask_v6(addr, len), len))
            .map(|((_, l), v)| (l, *v))
    }

    pub fn len_v4(&self) -> usize {
        self.v4.len()
    }

    pub fn len_v6(&self) -> usize {
        self.v6.len()
    }

    /// Approximate heap bytes used by the tables.
    pub fn mem_size(&self) -> usize {
        self.v4.mem_size() + self.v6.mem_size()
    }
}
