//! ChannelData messages (RFC 8656 §12.4): a 4-byte header (channel number, length)
//! followed by application data. This is the per-packet hot path, so parsing borrows
//! and encoding writes a header in front of data already in place.

/// Smallest channel number a client may bind (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// Largest channel number a client may bind under RFC 8656 §12.
pub const MAX_CHANNEL: u16 = 0x4FFF;
/// RFC 5766, which RFC 8656 replaced, allowed 0x4000..=0x7FFF, and clients of that era
/// (coturn's own `turnutils_uclient` among them) still pick numbers up there. The wire
/// format is the same, so the codec accepts the old range; whether such a number may
/// be *bound* is the server's policy (`rfc5766_channel_numbers`).
pub const MAX_LEGACY_CHANNEL: u16 = 0x7FFF;
/// Size of the ChannelData header.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not a usable ChannelData message.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ChannelDataError {
    /// Fewer than [`HEADER_LEN`] bytes (to parse, or to write the header into).
    #[error("shorter than the 4-byte ChannelData header")]
    TooShort,
    /// The channel number, outside `MIN_CHANNEL..=MAX_LEGACY_CHANNEL`.
    #[error("channel number {0:#06x} outside 0x4000..=0x7FFF")]
    BadChannel(u16),
    /// The length field promises more data than the buffer holds.
    #[error("length field says {declared} bytes of data, {available} present")]
    Truncated {
        /// Bytes of data the length field announces.
        declared: usize,
        /// Bytes present after the header.
        available: usize,
    },
    /// The data length given to [`write_header`], above 65535.
    #[error("{0} bytes of data do not fit the 16-bit length field")]
    TooLong(usize),
}

/// RFC 7983 demultiplexing: a first byte in 64..=79 (0x40..=0x4F) is TURN ChannelData;
/// up to 127 (0x7F) for RFC 5766 channel numbers.
pub fn is_channel_data(buf: &[u8]) -> bool {
    matches!(buf.first(), Some(0x40..=0x7F))
}

/// Returns (channel number, application data).
///
/// RFC 8656 §12.5: over UDP the datagram may be longer than 4 + length (a sender may
/// pad it); the extra bytes are ignored. Shorter is an error.
pub fn parse(buf: &[u8]) -> Result<(u16, &[u8]), ChannelDataError> {
    let [c0, c1, l0, l1, rest @ ..] = buf else {
        return Err(ChannelDataError::TooShort);
    };
    let channel = u16::from_be_bytes([*c0, *c1]);
    if !(MIN_CHANNEL..=MAX_LEGACY_CHANNEL).contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let declared = usize::from(u16::from_be_bytes([*l0, *l1]));
    let data = rest.get(..declared).ok_or(ChannelDataError::Truncated {
        declared,
        available: rest.len(),
    })?;
    Ok((channel, data))
}

/// Writes the 4-byte header (channel, `len`) into `buf[0..4]`, typically in front of
/// a peer's datagram received at offset 4. Never panics: a short buffer, a length
/// beyond 16 bits or a channel outside 0x4000..=0x7FFF is an error.
pub fn write_header(buf: &mut [u8], channel: u16, len: usize) -> Result<(), ChannelDataError> {
    let len16 = u16::try_from(len).map_err(|_| ChannelDataError::TooLong(len))?;
    if !(MIN_CHANNEL..=MAX_LEGACY_CHANNEL).contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let header = buf
        .get_mut(..HEADER_LEN)
        .ok_or(ChannelDataError::TooShort)?;
    header[..2].copy_from_slice(&channel.to_be_bytes());
    header[2..].copy_from_slice(&len16.to_be_bytes());
    Ok(())
}

/// Bytes a ChannelData message with `data_len` bytes of data occupies on a stream
/// transport, where RFC 8656 §12.5 requires padding to a multiple of 4.
pub fn stream_len(data_len: usize) -> usize {
    (HEADER_LEN + data_len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn demux_by_first_byte() {
        assert!(is_channel_data(&[0x40]));
        assert!(is_channel_data(&[0x4F, 0, 0, 0]));
        assert!(is_channel_data(&[0x7F, 0, 0, 0]));
        assert!(!is_channel_data(&[0x80, 0, 0, 0]));
        assert!(!is_channel_data(&[0x3F, 0, 0, 0]));
        assert!(!is_channel_data(&[]));
    }

    #[test]
    fn parse_ignores_udp_padding_and_rejects_truncation() {
        let msg = [0x40, 0x01, 0x00, 0x03, b'a', b'b', b'c', 0];
        assert_eq!(parse(&msg), Ok((0x4001, &b"abc"[..])));
        assert_eq!(parse(&msg[..7]), Ok((0x4001, &b"abc"[..])));
        assert_eq!(
            parse(&msg[..6]),
            Err(ChannelDataError::Truncated {
                declared: 3,
                available: 2
            })
        );
        assert_eq!(parse(&msg[..3]), Err(ChannelDataError::TooShort));
        assert_eq!(parse(&[0x40, 0x00, 0, 0]), Ok((0x4000, &[][..])));
    }

    #[test]
    fn parse_rejects_channels_outside_range() {
        assert_eq!(
            parse(&[0x3F, 0xFF, 0, 0]),
            Err(ChannelDataError::BadChannel(0x3FFF))
        );
        assert_eq!(
            parse(&[0x80, 0x00, 0, 0]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
        assert_eq!(parse(&[0x4F, 0xFF, 0, 0]), Ok((0x4FFF, &[][..])));
        assert_eq!(parse(&[0x7F, 0xFF, 0, 0]), Ok((0x7FFF, &[][..])));
    }

    #[test]
    fn write_header_errors_instead_of_panicking() {
        let mut small = [0u8; 3];
        assert_eq!(
            write_header(&mut small, 0x4000, 1),
            Err(ChannelDataError::TooShort)
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            write_header(&mut buf, 0x4000, 70_000),
            Err(ChannelDataError::TooLong(70_000))
        );
        assert_eq!(
            write_header(&mut buf, 0x3000, 1),
            Err(ChannelDataError::BadChannel(0x3000))
        );
        assert_eq!(write_header(&mut buf, 0x4ABC, 4), Ok(()));
        assert_eq!(buf[..4], [0x4A, 0xBC, 0x00, 0x04]);
    }

    #[test]
    fn stream_len_pads_to_four() {
        assert_eq!(stream_len(0), 4);
        assert_eq!(stream_len(1), 8);
        assert_eq!(stream_len(4), 8);
        assert_eq!(stream_len(5), 12);
    }

    proptest! {
        #[test]
        fn header_then_parse_round_trips(
            channel in MIN_CHANNEL..=MAX_CHANNEL,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            udp_padding in 0usize..4,
        ) {
            let mut buf = vec![0u8; HEADER_LEN + data.len() + udp_padding];
            buf[HEADER_LEN..HEADER_LEN + data.len()].copy_from_slice(&data);
            write_header(&mut buf, channel, data.len()).unwrap();
            let (got_channel, got_data) = parse(&buf).unwrap();
            prop_assert_eq!(got_channel, channel);
            prop_assert_eq!(got_data, &data[..]);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse(&bytes);
        }
    }
}
