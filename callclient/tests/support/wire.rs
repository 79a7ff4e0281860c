//! Just enough TURN and RTP parsing to read what the tap recorded.

/// RFC 8656 §12: a ChannelData message's first two bits are 01 (channels 0x4000-0x7FFF).
/// RFC 8489 §5: a STUN message's first two bits are 00.
/// Returns the application datagram a TURN message carries: the ChannelData payload, or
/// the DATA attribute of a Send (0x0016) or Data (0x0017) indication.
pub fn turn_payload(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if (0x40..=0x7F).contains(&first) {
        // RFC 8656 §12.4: channel number (2), length (2), then the data.
        let len = usize::from(u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]));
        return datagram.get(4..4 + len);
    }
    let message_type = u16::from_be_bytes([first, *datagram.get(1)?]);
    if message_type != 0x0016 && message_type != 0x0017 {
        return None;
    }
    // RFC 8489 §14: attributes after the 20-byte header, type (2), length (2), value
    // padded to 4 bytes. RFC 8656 §18.4: DATA is 0x0013.
    let mut rest = datagram.get(20..)?;
    while rest.len() >= 4 {
        let attr_type = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if attr_type == 0x0013 {
            return Some(value);
        }
        rest = rest.get(4 + len.next_multiple_of(4)..).unwrap_or_default();
    }
    None
}

/// What is inside a relayed datagram, by RFC 7983 §7's first-byte rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

pub fn kind(packet: &[u8]) -> Kind {
    match packet.first() {
        Some(0..=3) => Kind::Stun,
        Some(20..=63) => Kind::Dtls,
        // RFC 5761 §4: RTCP packet types 192-223 sit where RTP has marker + payload type.
        Some(128..=191) => match packet.get(1) {
            Some(192..=223) => Kind::Rtcp,
            _ => Kind::Rtp,
        },
        _ => Kind::Other,
    }
}

/// The clear-text fields of an RTP header (RFC 3550 §5.1) and where the payload starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub version: u8,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Header length: 12 + CSRCs + extension (RFC 3550 §5.3.1).
    pub header_len: usize,
}

pub fn rtp_header(packet: &[u8]) -> Option<RtpHeader> {
    let b = packet.get(..12)?;
    let csrc_count = usize::from(b[0] & 0x0F);
    let mut header_len = 12 + 4 * csrc_count;
    if b[0] & 0x10 != 0 {
        let ext = packet.get(header_len..header_len + 4)?;
        header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if packet.len() < header_len {
        return None;
    }
    Some(RtpHeader {
        version: b[0] >> 6,
        payload_type: b[1] & 0x7F,
        sequence_number: u16::from_be_bytes([b[2], b[3]]),
        timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        header_len,
    })
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
