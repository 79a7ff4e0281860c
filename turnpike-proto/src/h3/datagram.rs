//! HTTP Datagrams (RFC 9297) as CONNECT-UDP carries them (RFC 9298 §5): in a QUIC
//! DATAGRAM frame, or in a DATAGRAM capsule on the request stream when QUIC datagrams
//! cannot be used.
//!
//! A QUIC DATAGRAM payload is `Quarter Stream ID (varint) | Context ID (varint) |
//! payload`; a capsule is `Type (varint) | Length (varint) | Value`, and the value of
//! a DATAGRAM capsule (type 0) is `Context ID | payload`. Context ID 0 is a whole UDP
//! payload — for Turnpike one STUN message or ChannelData message.

use std::ops::Range;

use super::frame::{ErrorCode, H3Error};
use super::varint;

/// RFC 9297 §3.5: the DATAGRAM capsule type.
pub const CAPSULE_DATAGRAM: u64 = 0x00;
/// RFC 9298 §5: the context ID of a plain UDP payload.
pub const CONTEXT_UDP: u64 = 0;

/// One HTTP datagram taken from a QUIC DATAGRAM frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicDatagram {
    /// The request stream it belongs to (quarter stream ID × 4).
    pub stream_id: u64,
    /// Its context ID; only [`CONTEXT_UDP`] carries UDP payloads.
    pub context_id: u64,
    /// Where the payload lies in the frame's bytes.
    pub payload: Range<usize>,
}

/// Splits a QUIC DATAGRAM frame's payload. A quarter stream ID too large to name a
/// client-initiated bidirectional stream is H3_DATAGRAM_ERROR (RFC 9297 §2.1).
pub fn parse_quic_datagram(frame: &[u8]) -> Result<QuicDatagram, H3Error> {
    let error = |reason| H3Error::new(ErrorCode::DATAGRAM_ERROR, reason);
    let (quarter, a) = varint::read(frame).ok_or(error("no quarter stream ID"))?;
    // RFC 9297 §2.1: the stream ID is quarter × 4, and must fit in 62 bits.
    if quarter > varint::MAX / 4 {
        return Err(error("quarter stream ID out of range"));
    }
    let (context_id, b) = varint::read(&frame[a..]).ok_or(error("no context ID"))?;
    Ok(QuicDatagram {
        stream_id: quarter * 4,
        context_id,
        payload: a + b..frame.len(),
    })
}

/// The bytes in front of a UDP payload in a QUIC DATAGRAM for `stream_id`.
pub fn quic_datagram_header(stream_id: u64, out: &mut Vec<u8>) {
    varint::write(stream_id / 4, out);
    varint::write(CONTEXT_UDP, out);
}

/// One capsule from a request stream's data (RFC 9297 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capsule {
    /// Its type; unknown types are skipped by the receiver (RFC 9297 §3.2).
    pub kind: u64,
    /// Where its value lies in the buffer.
    pub value: Range<usize>,
}

/// The capsule at the start of `buf` and the bytes it takes, or `Ok(None)` if more
/// bytes are needed. A capsule longer than `max_len` is H3_EXCESSIVE_LOAD: the relay
/// never buffers more than that for one capsule.
pub fn parse_capsule(buf: &[u8], max_len: usize) -> Result<Option<(Capsule, usize)>, H3Error> {
    let Some((kind, a)) = varint::read(buf) else {
        return Ok(None);
    };
    let Some((len, b)) = varint::read(&buf[a..]) else {
        return Ok(None);
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max_len {
        return Err(H3Error::new(ErrorCode::EXCESSIVE_LOAD, "capsule too large"));
    }
    let start = a + b;
    if buf.len() - start < len {
        return Ok(None);
    }
    Ok(Some((
        Capsule {
            kind,
            value: start..start + len,
        },
        start + len,
    )))
}

/// Appends a DATAGRAM capsule carrying `payload` as a UDP payload (context 0).
pub fn write_datagram_capsule(payload: &[u8], out: &mut Vec<u8>) {
    varint::write(CAPSULE_DATAGRAM, out);
    varint::write(1 + payload.len() as u64, out);
    varint::write(CONTEXT_UDP, out);
    out.extend_from_slice(payload);
}

/// Splits a DATAGRAM capsule's value into its context ID and payload range (relative
/// to the value). An empty value is malformed (RFC 9298 §5).
pub fn split_context(value: &[u8]) -> Option<(u64, Range<usize>)> {
    let (context_id, n) = varint::read(value)?;
    Some((context_id, n..value.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_datagrams_round_trip_their_stream_and_payload() {
        for stream_id in [0u64, 4, 8 * 1024, 4 * (1 << 20)] {
            let mut frame = Vec::new();
            quic_datagram_header(stream_id, &mut frame);
            frame.extend_from_slice(b"\x00\x01stun");
            let d = parse_quic_datagram(&frame).unwrap();
            assert_eq!((d.stream_id, d.context_id), (stream_id, 0));
            assert_eq!(&frame[d.payload], b"\x00\x01stun");
        }
        assert_eq!(
            parse_quic_datagram(&[]).map_err(|e| e.code),
            Err(ErrorCode::DATAGRAM_ERROR)
        );
        assert_eq!(
            parse_quic_datagram(&[0x04]).map_err(|e| e.code),
            Err(ErrorCode::DATAGRAM_ERROR)
        );
        // The largest 62-bit quarter stream ID names a stream past 2^62.
        assert_eq!(
            parse_quic_datagram(&[0xFF; 9]).map_err(|e| e.code),
            Err(ErrorCode::DATAGRAM_ERROR)
        );
    }

    #[test]
    fn capsules_are_parsed_whole_and_datagram_values_split() {
        let mut buf = Vec::new();
        write_datagram_capsule(b"ChannelData", &mut buf);
        // An unknown capsule after it, which a reader skips by its length.
        buf.extend_from_slice(&[0x40, 0x99, 0x02, 0xAA, 0xBB]);
        for cut in 0..13 {
            assert_eq!(parse_capsule(&buf[..cut], 1500), Ok(None), "cut {cut}");
        }
        let (first, used) = parse_capsule(&buf, 1500).unwrap().unwrap();
        assert_eq!(first.kind, CAPSULE_DATAGRAM);
        let value = &buf[first.value.clone()];
        let (context, payload) = split_context(value).unwrap();
        assert_eq!((context, &value[payload]), (0, &b"ChannelData"[..]));
        let (second, rest) = parse_capsule(&buf[used..], 1500).unwrap().unwrap();
        assert_eq!((second.kind, rest), (0x99, 5));
        assert_eq!(
            parse_capsule(&buf, 4).map_err(|e| e.code),
            Err(ErrorCode::EXCESSIVE_LOAD)
        );
        assert_eq!(split_context(&[]), None);
    }
}
