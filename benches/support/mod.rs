//! What more than one bench needs: DNS query builders (built with the
//! `domain` crate, so the benches do not test our parser with our builder).

use std::str::FromStr;

use domain::base::iana::{Class, Rtype};
use domain::base::{MessageBuilder, Name};

/// An `A` query for `name` (id 0x4242, RD) with an OPT record (payload
/// 1232) whose options are `opts`, already encoded (code, length, data).
pub fn query_with_options(name: &str, opts: &[u8]) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0x4242);
    b.header_mut().set_rd(true);
    let mut b = b.question();
    b.push((
        Name::<Vec<u8>>::from_str(name).unwrap(),
        Rtype::A,
        Class::IN,
    ))
    .unwrap();
    let mut b = b.additional();
    b.opt(|o| {
        o.set_udp_payload_size(1232);
        Ok(())
    })
    .unwrap();
    let mut q = b.finish();
    // The OPT record is last and empty: its RDLENGTH is the last two bytes.
    let n = q.len();
    q[n - 2..].copy_from_slice(&(opts.len() as u16).to_be_bytes());
    q.extend_from_slice(opts);
    q
}
