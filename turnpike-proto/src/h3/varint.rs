//! QUIC variable-length integers (RFC 9000 §16), which HTTP/3 uses for frame types and
//! lengths, stream types, settings, capsules and datagram prefixes: the two most
//! significant bits of the first byte give the length (1, 2, 4 or 8 bytes), the rest is
//! the value, big-endian, up to 2^62 − 1.

/// The largest value a variable-length integer can carry.
pub const MAX: u64 = (1 << 62) - 1;

/// Decodes the integer at the start of `buf`: its value and how many bytes it took, or
/// `None` when `buf` ends before the integer does.
pub fn read(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut value = u64::from(first & 0x3F);
    for &b in &bytes[1..] {
        value = (value << 8) | u64::from(b);
    }
    Some((value, len))
}

/// How many bytes `value` takes (the shortest encoding); `value` must be ≤ [`MAX`].
pub fn len(value: u64) -> usize {
    match value {
        0..=0x3F => 1,
        0x40..=0x3FFF => 2,
        0x4000..=0x3FFF_FFFF => 4,
        _ => 8,
    }
}

/// Appends the shortest encoding of `value`, which must be ≤ [`MAX`] (larger values
/// lose their top bits; every caller encodes lengths, types and IDs well below it).
pub fn write(value: u64, out: &mut Vec<u8>) {
    let len = len(value);
    let tag: u64 = match len {
        1 => 0,
        2 => 0b01 << 14,
        4 => 0b10 << 30,
        _ => 0b11 << 62,
    };
    let encoded = (value & MAX) | tag;
    out.extend_from_slice(&encoded.to_be_bytes()[8 - len..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_9000_appendix_a_1_examples() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(read(bytes), Some((value, bytes.len())));
            let mut out = Vec::new();
            write(value, &mut out);
            assert_eq!(out, bytes);
        }
        // A non-minimal encoding is still a valid read (RFC 9000 §16).
        assert_eq!(read(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn truncated_input_is_none() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[0x40]), None);
        assert_eq!(read(&[0xc0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn every_length_boundary_round_trips() {
        for value in [0, 63, 64, 16_383, 16_384, (1 << 30) - 1, 1 << 30, MAX] {
            let mut out = Vec::new();
            write(value, &mut out);
            assert_eq!(out.len(), len(value));
            assert_eq!(read(&out), Some((value, out.len())));
        }
    }
}
