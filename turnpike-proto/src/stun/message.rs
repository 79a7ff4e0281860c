//! Parsing: a validated, borrowed view of one STUN message.

use std::ops::Range;

use super::attr;
use super::integrity;
use super::{split_message_type, Class, TransactionId, HEADER_LEN, MAGIC_COOKIE};

/// How many attributes a message may carry. Parsing stores attribute positions in a
/// fixed array of this size instead of allocating; TURN requests use about ten, so a
/// message with more is refused rather than buffered.
pub const MAX_ATTRIBUTES: usize = 32;

/// One attribute as it appears on the wire: its type and its value without padding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawAttribute<'a> {
    /// The attribute type (see [`super::attr`] for the known ones).
    pub typ: u16,
    /// The value, `length` bytes, without the padding to a multiple of 4.
    pub value: &'a [u8],
}

/// Why a datagram or frame is not a well-formed STUN message; the caller drops it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ParseError {
    /// Fewer than the 20 header bytes (RFC 8489 §5).
    #[error("shorter than the 20-byte STUN header")]
    TooShort,
    /// The first two bits are not 00, so this is not STUN (RFC 8489 §5, RFC 7983).
    #[error("first two bits are not 00")]
    NotStun,
    /// Bytes 4..8 are not [`super::MAGIC_COOKIE`].
    #[error("wrong magic cookie")]
    BadMagicCookie,
    /// The length field, which RFC 8489 §5 requires to be a multiple of 4.
    #[error("length field {0} is not a multiple of 4")]
    LengthNotAligned(u16),
    /// The length field disagrees with the bytes after the header.
    #[error("length field says {declared} bytes of attributes, {actual} present")]
    LengthMismatch {
        /// Attribute bytes the header's length field announces.
        declared: usize,
        /// Bytes actually present after the header.
        actual: usize,
    },
    /// Fewer than 4 bytes left where an attribute header should start.
    #[error("attribute header truncated")]
    AttributeHeaderTruncated,
    /// An attribute's value (with padding) extends past the message's end.
    #[error("attribute {typ:#06x} value runs past the end of the message")]
    AttributeOverrun {
        /// The offending attribute's type.
        typ: u16,
    },
    /// An attribute follows FINGERPRINT, which must be last (RFC 8489 §14.7).
    #[error("attribute {typ:#06x} after FINGERPRINT")]
    AttributeAfterFingerprint {
        /// The type of the attribute found after FINGERPRINT.
        typ: u16,
    },
    /// An attribute other than MESSAGE-INTEGRITY-SHA256 or FINGERPRINT follows
    /// MESSAGE-INTEGRITY (RFC 8489 §14.5).
    #[error("attribute {typ:#06x} after MESSAGE-INTEGRITY")]
    AttributeAfterIntegrity {
        /// The type of the attribute found after MESSAGE-INTEGRITY.
        typ: u16,
    },
    /// An attribute other than FINGERPRINT follows MESSAGE-INTEGRITY-SHA256
    /// (RFC 8489 §14.6).
    #[error("attribute {typ:#06x} after MESSAGE-INTEGRITY-SHA256")]
    AttributeAfterIntegritySha256 {
        /// The type of the attribute found after MESSAGE-INTEGRITY-SHA256.
        typ: u16,
    },
    /// FINGERPRINT's value length, which must be 4.
    #[error("FINGERPRINT value is {0} bytes, not 4")]
    FingerprintLength(usize),
    /// FINGERPRINT's CRC does not match the bytes before it.
    #[error("FINGERPRINT does not match the message")]
    BadFingerprint,
    /// MESSAGE-INTEGRITY's value length, which must be 20 (an HMAC-SHA1).
    #[error("MESSAGE-INTEGRITY value is {0} bytes, not 20")]
    IntegrityLength(usize),
    /// MESSAGE-INTEGRITY-SHA256's value length, which must be 16..=32 in steps of 4.
    #[error("MESSAGE-INTEGRITY-SHA256 value is {0} bytes, not 16..=32 in steps of 4")]
    IntegritySha256Length(usize),
    /// More attributes than [`MAX_ATTRIBUTES`]; the message is refused, not buffered.
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
}

/// Where one attribute sits in the message; offsets fit in u32 because a message
/// is at most 20 + 65535 bytes.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    typ: u16,
    len: u16,
    /// Offset of the attribute header (the value starts 4 bytes later).
    offset: u32,
}

/// A parsed STUN message borrowing the buffer it was parsed from.
///
/// Construction validates framing, attribute bounds, attribute order around
/// MESSAGE-INTEGRITY(-SHA256)/FINGERPRINT and the FINGERPRINT CRC, so every accessor
/// below is infallible. Integrity needs a key, so it is checked on demand.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    slots: [Slot; MAX_ATTRIBUTES],
    count: u8,
    /// Index into `slots` of MESSAGE-INTEGRITY, if present.
    integrity: Option<u8>,
    /// Index into `slots` of MESSAGE-INTEGRITY-SHA256, if present.
    integrity_sha256: Option<u8>,
}

fn be16(buf: &[u8], at: usize) -> Option<u16> {
    match buf.get(at..at + 2)? {
        [a, b] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

impl<'a> Message<'a> {
    /// Parses `buf`, which must be exactly one message (the shell's framer or the
    /// datagram boundary cut it). Validates everything listed in [`ParseError`].
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let header = buf.get(..HEADER_LEN).ok_or(ParseError::TooShort)?;
        let [t0, _, l0, l1, c0, c1, c2, c3, ..] = *header else {
            return Err(ParseError::TooShort);
        };
        // RFC 8489 §5: the top two bits of every STUN message are zero.
        if t0 & 0xC0 != 0 {
            return Err(ParseError::NotStun);
        }
        if u32::from_be_bytes([c0, c1, c2, c3]) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        // RFC 8489 §5: attributes are 4-byte aligned, so the length always is too.
        let declared = u16::from_be_bytes([l0, l1]);
        if !declared.is_multiple_of(4) {
            return Err(ParseError::LengthNotAligned(declared));
        }
        let actual = buf.len() - HEADER_LEN;
        if usize::from(declared) != actual {
            return Err(ParseError::LengthMismatch {
                declared: declared.into(),
                actual,
            });
        }

        let mut msg = Message {
            buf,
            slots: [Slot::default(); MAX_ATTRIBUTES],
            count: 0,
            integrity: None,
            integrity_sha256: None,
        };
        let mut fingerprint: Option<Slot> = None;
        let mut offset = HEADER_LEN;
        while offset < buf.len() {
            let (Some(typ), Some(len)) = (be16(buf, offset), be16(buf, offset + 2)) else {
                return Err(ParseError::AttributeHeaderTruncated);
            };
            let value_end = offset + 4 + usize::from(len);
            // RFC 8489 §14: values are padded to a multiple of 4; the padding must fit too.
            let padded_end = (value_end + 3) & !3;
            if padded_end > buf.len() {
                return Err(ParseError::AttributeOverrun { typ });
            }
            // RFC 8489 §14.7: FINGERPRINT is last. §14.5/§14.6: after MESSAGE-INTEGRITY
            // only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT may follow; after
            // MESSAGE-INTEGRITY-SHA256 only FINGERPRINT. (The RFC lets receivers ignore
            // such attributes; refusing them keeps the integrity coverage unambiguous.)
            if fingerprint.is_some() {
                return Err(ParseError::AttributeAfterFingerprint { typ });
            }
            if msg.integrity_sha256.is_some() && typ != attr::FINGERPRINT {
                return Err(ParseError::AttributeAfterIntegritySha256 { typ });
            }
            if msg.integrity.is_some()
                && typ != attr::MESSAGE_INTEGRITY_SHA256
                && typ != attr::FINGERPRINT
            {
                return Err(ParseError::AttributeAfterIntegrity { typ });
            }
            let index = msg.count;
            let slot = Slot {
                typ,
                len,
                offset: offset as u32,
            };
            match typ {
                attr::MESSAGE_INTEGRITY if len != 20 => {
                    return Err(ParseError::IntegrityLength(len.into()))
                }
                attr::MESSAGE_INTEGRITY => msg.integrity = Some(index),
                attr::MESSAGE_INTEGRITY_SHA256
                    if !(16..=32).contains(&len) || !len.is_multiple_of(4) =>
                {
                    return Err(ParseError::IntegritySha256Length(len.into()))
                }
                attr::MESSAGE_INTEGRITY_SHA256 => msg.integrity_sha256 = Some(index),
                attr::FINGERPRINT if len != 4 => {
                    return Err(ParseError::FingerprintLength(len.into()))
                }
                attr::FINGERPRINT => fingerprint = Some(slot),
                _ => {}
            }
            let stored = msg
                .slots
                .get_mut(usize::from(index))
                .ok_or(ParseError::TooManyAttributes)?;
            *stored = slot;
            msg.count += 1;
            offset = padded_end;
        }

        if let Some(fp) = fingerprint {
            let at = fp.offset as usize;
            let (covered, rest) = buf.split_at(at);
            let expected = integrity::fingerprint(covered);
            if rest.get(4..8) != Some(&expected.to_be_bytes()[..]) {
                return Err(ParseError::BadFingerprint);
            }
        }
        Ok(msg)
    }

    /// The message class (request, indication, success or error response).
    pub fn class(&self) -> Class {
        self.split_type().0
    }

    /// The 12-bit method (see [`super::method`]).
    pub fn method(&self) -> u16 {
        self.split_type().1
    }

    fn split_type(&self) -> (Class, u16) {
        split_message_type(be16(self.buf, 0).unwrap_or_default())
    }

    /// The 96-bit transaction id (bytes 8..20 of the header).
    pub fn transaction_id(&self) -> TransactionId {
        let mut tid = [0u8; 12];
        if let Some(bytes) = self.buf.get(8..HEADER_LEN) {
            tid.copy_from_slice(bytes);
        }
        TransactionId(tid)
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    fn slots(&self) -> &[Slot] {
        self.slots
            .get(..usize::from(self.count))
            .unwrap_or_default()
    }

    fn raw(&self, slot: &Slot) -> RawAttribute<'a> {
        let start = slot.offset as usize + 4;
        // Parsing checked that every value lies inside `buf`; the fallback is unreachable.
        let value = self
            .buf
            .get(start..start + usize::from(slot.len))
            .unwrap_or_default();
        RawAttribute {
            typ: slot.typ,
            value,
        }
    }

    /// All attributes in wire order, including MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.
    pub fn attributes(&self) -> impl Iterator<Item = RawAttribute<'a>> + '_ {
        self.slots().iter().map(|slot| self.raw(slot))
    }

    /// Number of attributes in the message.
    pub fn attribute_count(&self) -> usize {
        usize::from(self.count)
    }

    /// The value (without padding) of the first attribute of type `typ`.
    /// RFC 8489 §14: later duplicates are ignored.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.slots()
            .iter()
            .find(|s| s.typ == typ)
            .map(|s| self.raw(s).value)
    }

    /// Where [`Message::get`]'s value lies in the buffer the message was parsed from.
    pub fn value_range(&self, typ: u16) -> Option<Range<usize>> {
        let slot = self.slots().iter().find(|s| s.typ == typ)?;
        let start = slot.offset as usize + 4;
        Some(start..start + usize::from(slot.len))
    }

    /// Does the message carry an attribute of type `typ`?
    pub fn has(&self, typ: u16) -> bool {
        self.slots().iter().any(|s| s.typ == typ)
    }

    /// Comprehension-required types (0x0000..=0x7FFF) present but not in `known`, each
    /// once, in wire order: the caller answers 420 with UNKNOWN-ATTRIBUTES (RFC 8489 §6.3.1).
    /// Allocates only when there is something to report.
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        let mut out = Vec::new();
        for slot in self.slots() {
            if attr::is_comprehension_required(slot.typ)
                && !known.contains(&slot.typ)
                && !out.contains(&slot.typ)
            {
                out.push(slot.typ);
            }
        }
        out
    }

    /// The bytes an integrity attribute at `index` covers, split as (header with the
    /// length rewritten to end at that attribute, body bytes before it), and its value.
    fn integrity_input(&self, index: Option<u8>) -> Option<([u8; HEADER_LEN], &'a [u8], &'a [u8])> {
        let slot = *self.slots().get(usize::from(index?))?;
        let at = slot.offset as usize;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(self.buf.get(..HEADER_LEN)?);
        // RFC 8489 §14.5: the length field counts up to the end of the integrity
        // attribute, ignoring anything after it (e.g. FINGERPRINT).
        let covered_len = (at + 4 + usize::from(slot.len) - HEADER_LEN) as u16;
        header[2..4].copy_from_slice(&covered_len.to_be_bytes());
        let body = self.buf.get(HEADER_LEN..at)?;
        Some((header, body, self.raw(&slot).value))
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5): `None` if absent, else whether
    /// it verifies under `key` (short-term: the password; long-term: see
    /// [`integrity::long_term_key_md5`]). Constant-time comparison.
    pub fn check_integrity_sha1(&self, key: &[u8]) -> Option<bool> {
        let (header, body, tag) = self.integrity_input(self.integrity)?;
        Some(integrity::verify_sha1(key, &header, body, tag))
    }

    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full or truncated to 16..=32 bytes:
    /// `None` if absent, else whether it verifies under `key`. Constant-time comparison.
    pub fn check_integrity_sha256(&self, key: &[u8]) -> Option<bool> {
        let (header, body, tag) = self.integrity_input(self.integrity_sha256)?;
        Some(integrity::verify_sha256(key, &header, body, tag))
    }
}
