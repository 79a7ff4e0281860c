//! Cutting a TCP/TLS byte stream into messages (RFC 8656 §12.5): STUN messages and
//! ChannelData messages arrive back to back, and the first two bits of each tell
//! which it is (RFC 7983). ChannelData is padded to a multiple of 4 on streams.

use super::channel_data;
use super::stun::{HEADER_LEN, MAGIC_COOKIE};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not enough bytes yet to know or to hold the whole next message.
    Incomplete,
    /// The next message is `buf[..message_len]`; drop `consume` bytes (message plus
    /// stream padding) before looking for the one after.
    Complete {
        /// Bytes to drop from the stream: the message and, for ChannelData, its padding
        /// to a multiple of 4 (RFC 8656 §12.5).
        consume: usize,
        /// Bytes of the message itself, what the core is given.
        message_len: usize,
    },
    /// Not STUN or ChannelData: the stream cannot be resynchronised, close it.
    Invalid,
}

/// Looks at the start of `buf` and says where the next message ends.
///
/// STUN: `consume = message_len = 20 + length`. ChannelData: `message_len = 4 + length`,
/// `consume` rounded up to a multiple of 4. Invalid: a first byte that is neither STUN
/// (top bits 00) nor ChannelData (top bits 01, 0x40..=0x7F: RFC 8656 channel numbers
/// start with 0x40..=0x4F, RFC 5766's reach 0x7F; whether a number is bound is the
/// core's business, which drops ChannelData on an unbound one), a STUN length that is not a multiple
/// of 4, or (once 8 bytes are in) a wrong magic cookie — each means the peer is not
/// speaking TURN, and waiting for more bytes would only let it hold a buffer hostage.
pub fn next_frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::Incomplete;
    };
    match first {
        0x00..=0x3F => stun_frame(buf),
        0x40..=0x7F => channel_data_frame(buf),
        _ => Frame::Invalid,
    }
}

fn stun_frame(buf: &[u8]) -> Frame {
    let Some(&[_, _, l0, l1]) = buf.get(..4) else {
        return Frame::Incomplete;
    };
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    // RFC 8489 §5: the STUN length is always a multiple of 4.
    if !length.is_multiple_of(4) {
        return Frame::Invalid;
    }
    if let Some(&[c0, c1, c2, c3]) = buf.get(4..8) {
        if u32::from_be_bytes([c0, c1, c2, c3]) != MAGIC_COOKIE {
            return Frame::Invalid;
        }
    }
    let message_len = HEADER_LEN + length;
    if buf.len() < message_len {
        return Frame::Incomplete;
    }
    Frame::Complete {
        consume: message_len,
        message_len,
    }
}

fn channel_data_frame(buf: &[u8]) -> Frame {
    let Some(&[_, _, l0, l1]) = buf.get(..4) else {
        return Frame::Incomplete;
    };
    let data_len = usize::from(u16::from_be_bytes([l0, l1]));
    let message_len = channel_data::HEADER_LEN + data_len;
    // RFC 8656 §12.5: over TCP/TLS the padding is mandatory, so wait for all of it.
    let consume = channel_data::stream_len(data_len);
    if buf.len() < consume {
        return Frame::Incomplete;
    }
    Frame::Complete {
        consume,
        message_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, MessageBuilder, TransactionId};
    use proptest::prelude::*;

    fn stun(attrs: &[Vec<u8>], tid: [u8; 12]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Indication, 0x007, TransactionId(tid));
        for (i, value) in attrs.iter().enumerate() {
            b.add(0x8000 + i as u16, value);
        }
        buf
    }

    #[test]
    fn incomplete_until_whole_message_arrives() {
        let msg = stun(&[b"hello".to_vec()], [7; 12]);
        assert_eq!(next_frame(&[]), Frame::Incomplete);
        for cut in 1..msg.len() {
            assert_eq!(next_frame(&msg[..cut]), Frame::Incomplete, "cut at {cut}");
        }
        assert_eq!(
            next_frame(&msg),
            Frame::Complete {
                consume: msg.len(),
                message_len: msg.len()
            }
        );
    }

    #[test]
    fn channel_data_waits_for_padding() {
        let msg = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0];
        assert_eq!(next_frame(&msg[..9]), Frame::Incomplete);
        assert_eq!(next_frame(&msg[..11]), Frame::Incomplete);
        assert_eq!(
            next_frame(&msg),
            Frame::Complete {
                consume: 12,
                message_len: 9
            }
        );
        assert_eq!(
            next_frame(&[0x40, 0x00, 0x00, 0x00]),
            Frame::Complete {
                consume: 4,
                message_len: 4
            }
        );
    }

    #[test]
    fn invalid_first_bytes_and_lengths() {
        for first in [0x80u8, 0xA0, 0xC0, 0xFF] {
            assert_eq!(
                next_frame(&[first]),
                Frame::Invalid,
                "first byte {first:#04x}"
            );
        }
        assert_eq!(next_frame(&[0x00, 0x01, 0x00, 0x06]), Frame::Invalid);
        let mut msg = stun(&[], [1; 12]);
        msg[4] ^= 1;
        assert_eq!(next_frame(&msg), Frame::Invalid);
    }

    #[derive(Debug, Clone)]
    enum Piece {
        Stun(Vec<Vec<u8>>, [u8; 12]),
        Channel(u16, Vec<u8>),
    }

    fn piece() -> impl Strategy<Value = Piece> {
        prop_oneof![
            (
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
                any::<[u8; 12]>()
            )
                .prop_map(|(a, t)| Piece::Stun(a, t)),
            (
                0x4000u16..=0x4FFF,
                proptest::collection::vec(any::<u8>(), 0..70)
            )
                .prop_map(|(c, d)| Piece::Channel(c, d)),
        ]
    }

    proptest! {
        #[test]
        fn splits_concatenated_frames_exactly(pieces in proptest::collection::vec(piece(), 1..8)) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for p in &pieces {
                match p {
                    Piece::Stun(attrs, tid) => {
                        let msg = stun(attrs, *tid);
                        expected.push(msg.clone());
                        stream.extend_from_slice(&msg);
                    }
                    Piece::Channel(ch, data) => {
                        let mut msg = vec![0u8; channel_data::stream_len(data.len())];
                        channel_data::write_header(&mut msg, *ch, data.len()).unwrap();
                        msg[4..4 + data.len()].copy_from_slice(data);
                        expected.push(msg[..4 + data.len()].to_vec());
                        stream.extend_from_slice(&msg);
                    }
                }
            }
            let mut rest = &stream[..];
            let mut got = Vec::new();
            while !rest.is_empty() {
                match next_frame(rest) {
                    Frame::Complete { consume, message_len } => {
                        got.push(rest[..message_len].to_vec());
                        rest = &rest[consume..];
                    }
                    other => prop_assert!(false, "unexpected {:?} with {} bytes left", other, rest.len()),
                }
            }
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Frame::Complete { consume, message_len } = next_frame(&bytes) {
                prop_assert!(message_len <= consume && consume <= bytes.len());
            }
        }
    }
}
