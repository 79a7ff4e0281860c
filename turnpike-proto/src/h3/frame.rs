//! HTTP/3 frames, stream types, settings and error codes (RFC 9114 §6–§8), with the
//! extensions a CONNECT-UDP server announces: Extended CONNECT (RFC 9220) and HTTP
//! Datagrams (RFC 9297).

use super::varint;

/// RFC 9114 §7.2 frame types (and RFC 9297 none: datagrams are not frames).
pub mod kind {
    /// DATA: request or response content; in a CONNECT-UDP tunnel, capsules.
    pub const DATA: u64 = 0x00;
    /// HEADERS: a QPACK field section.
    pub const HEADERS: u64 = 0x01;
    /// CANCEL_PUSH (control stream).
    pub const CANCEL_PUSH: u64 = 0x03;
    /// SETTINGS (control stream, first frame, once).
    pub const SETTINGS: u64 = 0x04;
    /// PUSH_PROMISE (request streams; a client never sends it).
    pub const PUSH_PROMISE: u64 = 0x05;
    /// GOAWAY (control stream).
    pub const GOAWAY: u64 = 0x07;
    /// MAX_PUSH_ID (control stream, client to server).
    pub const MAX_PUSH_ID: u64 = 0x0d;

    /// HTTP/2 frame types with no HTTP/3 meaning: receiving one is H3_FRAME_UNEXPECTED
    /// (RFC 9114 §7.2.8).
    pub fn is_http2_only(kind: u64) -> bool {
        matches!(kind, 0x02 | 0x06 | 0x08 | 0x09)
    }
}

/// RFC 9114 §6.2 unidirectional stream types.
pub mod stream_kind {
    /// The control stream: SETTINGS first, then control frames.
    pub const CONTROL: u64 = 0x00;
    /// Server push (a client never opens one).
    pub const PUSH: u64 = 0x01;
    /// QPACK encoder stream (RFC 9204 §4.2).
    pub const QPACK_ENCODER: u64 = 0x02;
    /// QPACK decoder stream (RFC 9204 §4.2).
    pub const QPACK_DECODER: u64 = 0x03;
}

/// Settings identifiers the relay reads or sends.
pub mod setting {
    /// RFC 9204 §5: dynamic table capacity the sender's decoder allows (ours: 0).
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
    /// RFC 9114 §7.2.4.1: largest field section the sender accepts.
    pub const MAX_FIELD_SECTION_SIZE: u64 = 0x06;
    /// RFC 9204 §5: streams that may block on the dynamic table (ours: 0).
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x07;
    /// RFC 9220 §3: Extended CONNECT (the `:protocol` pseudo-header) is accepted.
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x08;
    /// RFC 9297 §2.1.1: HTTP Datagrams are supported.
    pub const H3_DATAGRAM: u64 = 0x33;

    /// HTTP/2 settings identifiers, an error in HTTP/3 (RFC 9114 §7.2.4.1).
    pub fn is_http2_only(id: u64) -> bool {
        matches!(id, 0x00 | 0x02..=0x05)
    }
}

/// HTTP/3 error codes (RFC 9114 §8.1, RFC 9204 §6, RFC 9297 §2.1.1), sent in
/// CONNECTION_CLOSE or RESET_STREAM / STOP_SENDING.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub u64);

#[allow(missing_docs)] // each is named after its RFC 9114 §8.1 entry
impl ErrorCode {
    pub const NO_ERROR: ErrorCode = ErrorCode(0x100);
    pub const GENERAL_PROTOCOL_ERROR: ErrorCode = ErrorCode(0x101);
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x102);
    pub const STREAM_CREATION_ERROR: ErrorCode = ErrorCode(0x103);
    pub const CLOSED_CRITICAL_STREAM: ErrorCode = ErrorCode(0x104);
    pub const FRAME_UNEXPECTED: ErrorCode = ErrorCode(0x105);
    pub const FRAME_ERROR: ErrorCode = ErrorCode(0x106);
    pub const EXCESSIVE_LOAD: ErrorCode = ErrorCode(0x107);
    pub const ID_ERROR: ErrorCode = ErrorCode(0x108);
    pub const SETTINGS_ERROR: ErrorCode = ErrorCode(0x109);
    pub const MISSING_SETTINGS: ErrorCode = ErrorCode(0x10a);
    pub const REQUEST_REJECTED: ErrorCode = ErrorCode(0x10b);
    pub const REQUEST_CANCELLED: ErrorCode = ErrorCode(0x10c);
    pub const REQUEST_INCOMPLETE: ErrorCode = ErrorCode(0x10d);
    pub const MESSAGE_ERROR: ErrorCode = ErrorCode(0x10e);
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0x10f);
    pub const VERSION_FALLBACK: ErrorCode = ErrorCode(0x110);
    pub const QPACK_DECOMPRESSION_FAILED: ErrorCode = ErrorCode(0x200);
    pub const DATAGRAM_ERROR: ErrorCode = ErrorCode(0x33);
}

/// A protocol error and a reason to log (never sent: RFC 9114 reasons are optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H3Error {
    /// What to close the connection (or reset the stream) with.
    pub code: ErrorCode,
    /// Why, for the log.
    pub reason: &'static str,
}

impl H3Error {
    /// An error with `code` and `reason`.
    pub const fn new(code: ErrorCode, reason: &'static str) -> H3Error {
        H3Error { code, reason }
    }
}

/// A frame's type and payload length, and where its payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type ([`kind`]); unknown types are skipped (RFC 9114 §9).
    pub kind: u64,
    /// Payload length in bytes.
    pub len: u64,
    /// Bytes of the type and length fields.
    pub header_len: usize,
}

impl FrameHeader {
    /// The header at the start of `buf`, or `None` if `buf` ends inside it.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let (kind, a) = varint::read(buf)?;
        let (len, b) = varint::read(buf.get(a..)?)?;
        Some(FrameHeader {
            kind,
            len,
            header_len: a + b,
        })
    }
}

/// A whole frame at the start of `buf`: its header and payload, or `Ok(None)` if more
/// bytes are needed. A frame other than DATA longer than `max_len` is
/// H3_EXCESSIVE_LOAD: the relay never buffers more than that for one frame.
pub fn parse_frame(buf: &[u8], max_len: usize) -> Result<Option<(FrameHeader, &[u8])>, H3Error> {
    let Some(header) = FrameHeader::parse(buf) else {
        return Ok(None);
    };
    let len = usize::try_from(header.len).unwrap_or(usize::MAX);
    if len > max_len {
        return Err(H3Error::new(ErrorCode::EXCESSIVE_LOAD, "frame too large"));
    }
    Ok(buf
        .get(header.header_len..header.header_len + len)
        .map(|payload| (header, payload)))
}

/// Appends a frame of `kind` carrying `payload`.
pub fn write_frame(kind: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint::write(kind, out);
    varint::write(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The peer's SETTINGS, as far as the relay cares (RFC 9114 §7.2.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_H3_DATAGRAM = 1 (RFC 9297 §2.1.1): the peer accepts HTTP Datagrams.
    pub h3_datagram: bool,
    /// SETTINGS_MAX_FIELD_SECTION_SIZE, if given: the largest field section to send it.
    pub max_field_section_size: Option<u64>,
}

impl Settings {
    /// Parses a SETTINGS payload. Duplicate identifiers, HTTP/2 identifiers and an
    /// H3_DATAGRAM value other than 0 or 1 are H3_SETTINGS_ERROR; unknown identifiers
    /// are ignored (RFC 9114 §7.2.4.1, §9).
    pub fn parse(mut payload: &[u8]) -> Result<Settings, H3Error> {
        let error = |reason| H3Error::new(ErrorCode::SETTINGS_ERROR, reason);
        let mut settings = Settings::default();
        let mut seen: Vec<u64> = Vec::new();
        while !payload.is_empty() {
            let (id, a) = varint::read(payload).ok_or(error("truncated setting id"))?;
            let (value, b) = varint::read(&payload[a..]).ok_or(error("truncated setting value"))?;
            payload = &payload[a + b..];
            if seen.contains(&id) {
                return Err(error("duplicate setting"));
            }
            // Bounded: a SETTINGS frame is bounded by the frame size limit.
            seen.push(id);
            if setting::is_http2_only(id) {
                return Err(error("HTTP/2 setting"));
            }
            match id {
                setting::H3_DATAGRAM => {
                    settings.h3_datagram = match value {
                        0 => false,
                        1 => true,
                        _ => return Err(error("H3_DATAGRAM must be 0 or 1")),
                    }
                }
                setting::MAX_FIELD_SECTION_SIZE => settings.max_field_section_size = Some(value),
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// The relay's own SETTINGS payload: no dynamic table, Extended CONNECT and HTTP
/// Datagrams on, and the field section size it accepts.
pub fn server_settings(max_field_section_size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in [
        (setting::QPACK_MAX_TABLE_CAPACITY, 0),
        (setting::QPACK_BLOCKED_STREAMS, 0),
        (setting::MAX_FIELD_SECTION_SIZE, max_field_section_size),
        (setting::ENABLE_CONNECT_PROTOCOL, 1),
        (setting::H3_DATAGRAM, 1),
    ] {
        varint::write(id, &mut out);
        varint::write(value, &mut out);
    }
    out
}

/// A client's SETTINGS payload for a CONNECT-UDP tunnel: no dynamic table, HTTP
/// Datagrams on.
pub fn client_settings() -> Vec<u8> {
    let mut out = Vec::new();
    for (id, value) in [
        (setting::QPACK_MAX_TABLE_CAPACITY, 0),
        (setting::QPACK_BLOCKED_STREAMS, 0),
        (setting::H3_DATAGRAM, 1),
    ] {
        varint::write(id, &mut out);
        varint::write(value, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_parsed_whole_or_not_at_all() {
        let mut buf = Vec::new();
        write_frame(kind::HEADERS, b"abc", &mut buf);
        assert_eq!(buf, [0x01, 0x03, b'a', b'b', b'c']);
        for cut in 0..buf.len() {
            assert_eq!(parse_frame(&buf[..cut], 1024), Ok(None), "cut at {cut}");
        }
        let (header, payload) = parse_frame(&buf, 1024).unwrap().unwrap();
        assert_eq!((header.kind, header.len, header.header_len), (1, 3, 2));
        assert_eq!(payload, b"abc");
        assert_eq!(
            parse_frame(&buf, 2).map(|_| ()),
            Err(H3Error::new(ErrorCode::EXCESSIVE_LOAD, "frame too large"))
        );
    }

    #[test]
    fn our_settings_parse_back_and_bad_ones_are_refused() {
        let ours = Settings::parse(&server_settings(16_384)).unwrap();
        assert!(ours.h3_datagram);
        assert_eq!(ours.max_field_section_size, Some(16_384));
        // A reserved (grease) identifier 0x21 is ignored.
        assert_eq!(
            Settings::parse(&[0x40, 0x21, 0x05, 0x33, 0x01]).unwrap(),
            Settings {
                h3_datagram: true,
                max_field_section_size: None
            }
        );
        let code = |p: &[u8]| Settings::parse(p).map_err(|e| e.code);
        assert_eq!(code(&[0x33, 1, 0x33, 1]), Err(ErrorCode::SETTINGS_ERROR));
        assert_eq!(code(&[0x02, 0]), Err(ErrorCode::SETTINGS_ERROR));
        assert_eq!(code(&[0x33, 2]), Err(ErrorCode::SETTINGS_ERROR));
        assert_eq!(code(&[0x33]), Err(ErrorCode::SETTINGS_ERROR));
    }
}
