//! What a relayed payload is, from its first two bytes only.
//!
//! A call multiplexes STUN (ICE checks between the two clients), DTLS (the key
//! exchange) and SRTP/SRTCP on one 5-tuple; RFC 7983 §7 splits them by the first byte,
//! and RFC 5761 §4 tells RTCP from RTP by the second (RTCP packet types 192–223 sit
//! where an RTP marker bit plus payload type 64–95 would, and payload types 64–95 are
//! never used for RTP when RTP and RTCP share a port). Nothing past byte 1 is read.

/// The kind of a relayed payload: the `kind` label of
/// `turnpike_relayed_payloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// RTP (SRTP on an encrypted call): first byte 128–191 (version 2).
    Rtp = 0,
    /// RTCP (SRTCP): first byte 128–191 and second byte 192–223.
    Rtcp,
    /// DTLS: first byte 20–63.
    Dtls,
    /// STUN: first byte 0–3 (the clients' own ICE connectivity checks).
    Stun,
    /// Anything else: ZRTP (16–19), TURN channels (64–79), unknown, empty.
    Other,
}

impl PayloadKind {
    /// Every kind, in index order (the slots of `Stats::payloads`).
    pub const ALL: [PayloadKind; 5] = [
        PayloadKind::Rtp,
        PayloadKind::Rtcp,
        PayloadKind::Dtls,
        PayloadKind::Stun,
        PayloadKind::Other,
    ];

    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Rtp => "rtp",
            PayloadKind::Rtcp => "rtcp",
            PayloadKind::Dtls => "dtls",
            PayloadKind::Stun => "stun",
            PayloadKind::Other => "other",
        }
    }
}

/// Classify a payload by RFC 7983 §7 and RFC 5761 §4.
#[inline]
pub fn classify(payload: &[u8]) -> PayloadKind {
    match payload.first() {
        Some(0..=3) => PayloadKind::Stun,
        Some(20..=63) => PayloadKind::Dtls,
        Some(128..=191) => match payload.get(1) {
            Some(192..=223) => PayloadKind::Rtcp,
            // A one-byte "RTP" packet is not one; too short to carry a header.
            Some(_) => PayloadKind::Rtp,
            None => PayloadKind::Other,
        },
        _ => PayloadKind::Other,
    }
}

/// The fixed RTP header fields a relay may read (RFC 3550 §5.1): all in the clear
/// under SRTP (RFC 3711 §3.1). Header extensions and CSRCs are never looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp, in the stream's clock.
    pub timestamp: u32,
    /// Synchronisation source: which stream.
    pub ssrc: u32,
}

impl RtpHeader {
    /// The fixed header of an RTP packet, if it is long enough to have one.
    #[inline]
    pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
        let h: &[u8; 12] = packet.get(..12)?.try_into().ok()?;
        Some(RtpHeader {
            seq: u16::from_be_bytes([h[2], h[3]]),
            timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges_of_rfc_7983() {
        assert_eq!(classify(&[0x00, 0x01]), PayloadKind::Stun);
        assert_eq!(classify(&[0x01, 0x01]), PayloadKind::Stun);
        assert_eq!(classify(&[3]), PayloadKind::Stun);
        assert_eq!(classify(&[16, 0]), PayloadKind::Other); // ZRTP
        assert_eq!(classify(&[22, 0xfe, 0xfd]), PayloadKind::Dtls); // handshake
        assert_eq!(classify(&[23, 0xfe, 0xfd]), PayloadKind::Dtls); // application data
        assert_eq!(classify(&[63]), PayloadKind::Dtls);
        assert_eq!(classify(&[64, 0]), PayloadKind::Other); // a TURN channel
        assert_eq!(classify(&[0x80, 111]), PayloadKind::Rtp); // Opus, PT 111
        assert_eq!(classify(&[0x90, 0xe0]), PayloadKind::Rtp); // marker + PT 96, extension
        assert_eq!(classify(&[0x80, 200]), PayloadKind::Rtcp); // sender report
        assert_eq!(classify(&[0x81, 201]), PayloadKind::Rtcp); // receiver report
        assert_eq!(classify(&[0x8f, 206]), PayloadKind::Rtcp); // payload-specific feedback
        assert_eq!(classify(&[0x80]), PayloadKind::Other);
        assert_eq!(classify(&[0xc0, 111]), PayloadKind::Other); // version 3
        assert_eq!(classify(&[]), PayloadKind::Other);
    }

    #[test]
    fn rtp_header_fields() {
        let packet = [
            0x80, 0x6f, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0xff,
        ];
        assert_eq!(
            RtpHeader::parse(&packet),
            Some(RtpHeader {
                seq: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 0x0102_0304
            })
        );
        assert_eq!(RtpHeader::parse(&packet[..11]), None);
    }
}
