//! Domain names as the address map stores them: lowercase uncompressed wire
//! format, hashed, in a read-only open-addressing table.
//!
//! Owns name parsing from configuration text, ASCII case folding, the hash
//! used on the request path, and the lookup table from a name to an entry
//! index. What an entry holds is the parent module's business.

use std::str::FromStr;

/// Longest name in wire format (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;

/// Parse a name in presentation format (escapes allowed, trailing dot
/// optional) into wire format, case preserved.
pub fn parse_name(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty name: write an absolute domain name such as `svc.example.`".into());
    }
    match domain::base::name::Name::<Vec<u8>>::from_str(t) {
        Ok(n) => Ok(n.into_octets()),
        Err(e) => Err(format!(
            "`{t}` is not a valid domain name ({e}); labels are at most 63 bytes, \
             names at most 255, separated by single dots"
        )),
    }
}

/// ASCII lowercase of one byte (label length bytes are < 64 and unchanged).
#[inline(always)]
pub fn fold(b: u8) -> u8 {
    b | (((b.wrapping_sub(b'A') < 26) as u8) << 5)
}

/// Lowercased copy of a wire-format name.
pub fn lower(wire: &[u8]) -> Vec<u8> {
    wire.iter().map(|&b| fold(b)).collect()
}

/// Size of a name buffer for [`hash_padded`]: a name plus zero padding to a
/// whole number of 8-byte words.
pub const NAME_BUF: usize = MAX_NAME + 9;

/// Hash of a lowercase wire name.
#[inline]
pub fn hash(name: &[u8]) -> u64 {
    let mut buf = [0u8; NAME_BUF];
    let n = name.len().min(MAX_NAME);
    buf[..n].copy_from_slice(&name[..n]);
    hash_padded(&buf, n)
}

const HASH_M: u64 = 0x9E37_79B9_7F4A_7C15;

/// One word step of the name hash. Word multiplies are independent of each
/// other (they pipeline); the rotate/xor chain keeps word order significant.
#[inline(always)]
fn hash_step(h: u64, w: u64) -> u64 {
    h.rotate_left(19) ^ w.wrapping_mul(HASH_M)
}

#[inline(always)]
fn hash_finish(h: u64) -> u64 {
    let h = h.wrapping_mul(HASH_M);
    h ^ (h >> 32)
}

/// Hash of the `n`-byte name at the start of `buf`, whose bytes from `n` to
/// the next multiple of 8 are zero.
#[inline]
pub fn hash_padded(buf: &[u8; NAME_BUF], n: usize) -> u64 {
    let words = n.div_ceil(8).min(NAME_BUF / 8);
    let mut h: u64 = n as u64;
    for w in buf.chunks_exact(8).take(words) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = hash_step(h, u64::from_le_bytes(b));
    }
    hash_finish(h)
}

/// ASCII lowercase of eight bytes at once (SWAR; non-ASCII bytes and label
/// length bytes, all < 64, are unchanged).
#[inline(always)]
pub fn fold_word(w: u64) -> u64 {
    const L: u64 = 0x0101_0101_0101_0101;
    let heptets = w & (0x7f * L);
    let ge_a = heptets.wrapping_add((0x80 - b'A' as u64) * L);
    let gt_z = heptets.wrapping_add((0x7f - b'Z' as u64) * L);
    let upper = (ge_a ^ gt_z) & !w & (0x80 * L);
    w | (upper >> 2)
}

/// Copy the `n`-byte wire name at the start of `src` into `buf` lowercased
/// and zero padded, returning its hash (equal to `hash(lowercase name)`).
/// One pass, eight bytes at a time. `src.len() >= n` and `n <= MAX_NAME`
/// are the caller's to check; otherwise the name is cut short.
#[inline(always)]
pub fn copy_fold_hash(src: &[u8], n: usize, buf: &mut [u8; NAME_BUF]) -> u64 {
    let n = n.min(src.len()).min(MAX_NAME);
    let mut h: u64 = n as u64;
    let mut i = 0;
    while i < n {
        let mut b = [0u8; 8];
        let take = (n - i).min(8);
        // Whole-word loads whenever the message has 8 bytes here (the
        // question's type and class usually follow the name), masked below;
        // a partial copy then a word load stalls store forwarding.
        match src.get(i..i + 8) {
            Some(s) => b.copy_from_slice(s),
            None => b[..take].copy_from_slice(&src[i..i + take]),
        }
        let w = fold_word(u64::from_le_bytes(b) & (u64::MAX >> (64 - 8 * take as u32)));
        buf[i..i + 8].copy_from_slice(&w.to_le_bytes());
        h = hash_step(h, w);
        i += 8;
    }
    hash_finish(h)
}

/// Offsets of the labels of a (valid, uncompressed) wire name; the last
/// offset is the root label.
pub fn label_offsets(wire: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < wire.len() {
        v.push(i);
        let l = wire[i] as usize;
        if l == 0 {
            break;
        }
        i += l + 1;
    }
    v
}

/// Presentation form of a wire name, for messages.
pub fn display(wire: &[u8]) -> String {
    match domain::base::name::Name::from_octets(wire) {
        Ok(n) if n.is_root() => ".".into(),
        Ok(n) => format!("{n}."),
        Err(_) => format!("{wire:?}"),
    }
}

/// Read-only map from lowercase wire names to `u32` values.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    /// 0 = empty, else entry index + 1.
    slots: Vec<u32>,
    mask: usize,
    /// (hash, key offset, key len, value)
    entries: Vec<(u64, u32, u16, u32)>,
    keys: Vec<u8>,
}

impl NameTable {
    /// Build from distinct lowercase names.
    pub fn build(items: Vec<(Vec<u8>, u32)>) -> Self {
        let cap = (items.len() * 2).next_power_of_two().max(8);
        let mut t = NameTable {
            slots: vec![0; cap],
            mask: cap - 1,
            entries: Vec::with_capacity(items.len()),
            keys: Vec::new(),
        };
        for (k, v) in items {
            let h = hash(&k);
            let off = t.keys.len() as u32;
            t.keys.extend_from_slice(&k);
            t.entries.push((h, off, k.len() as u16, v));
            let idx = t.entries.len() as u32;
            let mut s = h as usize & t.mask;
            while t.slots[s] != 0 {
                s = (s + 1) & t.mask;
            }
            t.slots[s] = idx;
        }
        t
    }

    /// Value stored for `name` (lowercase wire), given `hash(name)`.
    #[inline]
    pub fn get(&self, name: &[u8], h: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut s = h as usize & self.mask;
        loop {
            let e = *self.slots.get(s)?;
            if e == 0 {
                return None;
            }
            let (eh, off, len, v) = *self.entries.get(e as usize - 1)?;
            if eh == h && self.keys.get(off as usize..off as usize + len as usize)? == name {
                return Some(v);
            }
            s = (s + 1) & self.mask;
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_fold() {
        let w = parse_name("UPF.Svc.Example").unwrap();
        assert_eq!(w, b"\x03UPF\x03Svc\x07Example\x00");
        assert_eq!(lower(&w), b"\x03upf\x03svc\x07example\x00");
        assert_eq!(parse_name(".").unwrap(), b"\x00");
        assert!(parse_name("a..b").is_err());
        assert!(parse_name("").is_err());
        assert!(parse_name(&"x".repeat(64)).is_err());
        assert_eq!(display(&w), "UPF.Svc.Example.");
        assert_eq!(display(b"\0"), ".");
    }

    #[test]
    fn fold_only_changes_ascii_upper() {
        for b in 0..=255u8 {
            assert_eq!(fold(b), b.to_ascii_lowercase());
            let w = u64::from_le_bytes([b, b'A', b'z', b, 0x80 | b, b'Z', b'@', b'[']);
            let want = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'a',
                b'z',
                b.to_ascii_lowercase(),
                (0x80 | b).to_ascii_lowercase(),
                b'z',
                b'@',
                b'[',
            ]);
            assert_eq!(fold_word(w), want, "{b}");
        }
    }

    proptest::proptest! {
        #[test]
        fn copy_fold_hash_matches_hash_of_lowercase(name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..=MAX_NAME), extra in 0usize..10) {
            let mut src = name.clone();
            src.extend(std::iter::repeat_n(0xAB, extra));
            let mut buf = [0xFFu8; NAME_BUF];
            let h = copy_fold_hash(&src, name.len(), &mut buf);
            let low = lower(&name);
            proptest::prop_assert_eq!(&buf[..name.len()], &low[..]);
            proptest::prop_assert!(buf[name.len()..name.len().div_ceil(8) * 8].iter().all(|&b| b == 0));
            proptest::prop_assert_eq!(h, hash(&low));
            proptest::prop_assert_eq!(h, hash_padded(&buf, name.len()));
        }
    }

    #[test]
    fn table_finds_every_key_and_nothing_else() {
        let names: Vec<Vec<u8>> = (0..500)
            .map(|i| lower(&parse_name(&format!("n{i}.svc.example.")).unwrap()))
            .collect();
        let t = NameTable::build(names.iter().cloned().zip(0u32..).collect());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(t.get(n, hash(n)), Some(i as u32));
        }
        let miss = lower(&parse_name("n500.svc.example.").unwrap());
        assert_eq!(t.get(&miss, hash(&miss)), None);
        assert_eq!(NameTable::default().get(b"\0", hash(b"\0")), None);
    }

    #[test]
    fn offsets() {
        assert_eq!(label_offsets(b"\x01a\x02bc\x00"), vec![0, 2, 5]);
        assert_eq!(label_offsets(b"\x00"), vec![0]);
    }
}
