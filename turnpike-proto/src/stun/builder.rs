//! Encoding: writes a STUN message into a caller-owned buffer.

use std::net::{IpAddr, SocketAddr};

use super::attr::{self, FAMILY_IPV4, FAMILY_IPV6};
use super::integrity;
use super::{message_type, Class, TransactionId, HEADER_LEN, MAGIC_COOKIE, MAX_MESSAGE_LEN};

/// Why an attribute could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum BuildError {
    /// The value's length in bytes: with it the message would exceed the 16-bit length field.
    #[error("attribute value of {0} bytes does not fit a STUN message")]
    TooLong(usize),
}

/// Writes one STUN message into a `Vec<u8>` the caller owns and reuses, so encoding
/// a response allocates nothing once the buffer has grown to size.
///
/// The header's length field is kept right after every `add_*`, so the buffer is
/// always a complete message. Add MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256,
/// then FINGERPRINT last (RFC 8489 §14.5–§14.7): each covers what precedes it.
///
/// Adding never panics: an attribute that would push the message past the 16-bit
/// length field (only possible with a huge DATA value) is left out and
/// [`MessageBuilder::overflowed`] turns true; [`MessageBuilder::try_add`] reports it instead.
pub struct MessageBuilder<'b> {
    buf: &'b mut Vec<u8>,
    tid: TransactionId,
    overflowed: bool,
}

impl<'b> MessageBuilder<'b> {
    /// Clears `buf` and writes a header for `class`/`method` with transaction id `tid`.
    pub fn new(buf: &'b mut Vec<u8>, class: Class, method: u16, tid: TransactionId) -> Self {
        buf.clear();
        buf.extend_from_slice(&message_type(class, method).to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&tid.0);
        MessageBuilder {
            buf,
            tid,
            overflowed: false,
        }
    }

    /// Length of the message so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: the header is written by [`MessageBuilder::new`].
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// True if an attribute was left out because it did not fit (see the type docs).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The message written so far.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf
    }

    /// Appends an attribute with `value`, zero-padded to a multiple of 4 bytes.
    pub fn add(&mut self, typ: u16, value: &[u8]) {
        if self.try_add(typ, value).is_err() {
            self.overflowed = true;
        }
    }

    /// Like [`MessageBuilder::add`], but reports a value that does not fit.
    pub fn try_add(&mut self, typ: u16, value: &[u8]) -> Result<(), BuildError> {
        self.attribute(typ, value.len(), |buf| buf.extend_from_slice(value))
    }

    /// Like [`MessageBuilder::add`], but pads with `pad` instead of zeros. RFC 8489 §14
    /// sends zeros; RFC 5389 allowed any value and the RFC 5769 test vectors pad with
    /// spaces, which integrity covers, so reproducing them byte for byte needs this.
    pub fn add_with_padding(&mut self, typ: u16, value: &[u8], pad: u8) {
        let padded = (value.len() + 3) & !3;
        let written = self.attribute(typ, padded, |buf| {
            buf.extend_from_slice(value);
            buf.resize(buf.len() + (padded - value.len()), pad);
        });
        // The header was written with the padded length; store the real one.
        match written {
            Ok(()) => {
                let len_at = self.buf.len() - padded - 2;
                // Fits in u16: `attribute` accepted `padded`, which is at least `value.len()`.
                let len = (value.len() as u16).to_be_bytes();
                if let Some(field) = self.buf.get_mut(len_at..len_at + 2) {
                    field.copy_from_slice(&len);
                }
            }
            Err(_) => self.overflowed = true,
        }
    }

    /// Writes the attribute header, lets `write` append exactly `len` value bytes, then
    /// pads and updates the header length. Checks the size first, so a refused
    /// attribute leaves the buffer untouched.
    fn attribute(
        &mut self,
        typ: u16,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), BuildError> {
        let padded = (len + 3) & !3;
        let Ok(len16) = u16::try_from(len) else {
            return Err(BuildError::TooLong(len));
        };
        if self.buf.len() + 4 + padded > MAX_MESSAGE_LEN {
            return Err(BuildError::TooLong(len));
        }
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&len16.to_be_bytes());
        write(self.buf);
        // RFC 8489 §14: padding bytes are zero on send and ignored on receipt.
        self.buf.resize(self.buf.len() + (padded - len), 0);
        self.set_length(self.buf.len() - HEADER_LEN);
        Ok(())
    }

    fn set_length(&mut self, body_len: usize) {
        // Callers keep the message within MAX_MESSAGE_LEN, so the body fits in u16.
        let len = u16::try_from(body_len).unwrap_or(u16::MAX).to_be_bytes();
        if let Some(field) = self.buf.get_mut(2..4) {
            field.copy_from_slice(&len);
        }
    }

    /// A 32-bit value such as LIFETIME.
    pub fn add_u32(&mut self, typ: u16, v: u32) {
        self.add(typ, &v.to_be_bytes());
    }

    /// MAPPED-ADDRESS format (RFC 8489 §14.1).
    pub fn add_address(&mut self, typ: u16, addr: SocketAddr) {
        self.address(typ, addr.port(), addr.ip());
    }

    /// XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS format (RFC 8489 §14.2),
    /// masked with the cookie and, for IPv6, this message's transaction id.
    pub fn add_xor_address(&mut self, typ: u16, addr: SocketAddr) {
        let mut ip = addr.ip();
        attr::xor_ip(&mut ip, &self.tid);
        self.address(typ, addr.port() ^ (MAGIC_COOKIE >> 16) as u16, ip);
    }

    fn address(&mut self, typ: u16, port: u16, ip: IpAddr) {
        let mut value = [0u8; 20];
        value[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match ip {
            IpAddr::V4(v4) => {
                value[1] = FAMILY_IPV4;
                value[4..8].copy_from_slice(&v4.octets());
                8
            }
            IpAddr::V6(v6) => {
                value[1] = FAMILY_IPV6;
                value[4..20].copy_from_slice(&v6.octets());
                20
            }
        };
        self.add(typ, &value[..len]);
    }

    /// ERROR-CODE (RFC 8489 §14.8) with `code` in 300..=699 and a reason phrase, which
    /// is cut (at a character boundary) to the RFC's 763-byte maximum.
    pub fn add_error_code(&mut self, code: u16, reason: &str) {
        let mut cut = reason.len().min(763);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let reason = reason.get(..cut).unwrap_or_default();
        let class = ((code / 100) & 0x07) as u8;
        let number = (code % 100) as u8;
        let written = self.attribute(attr::ERROR_CODE, 4 + reason.len(), |buf| {
            buf.extend_from_slice(&[0, 0, class, number]);
            buf.extend_from_slice(reason.as_bytes());
        });
        self.overflowed |= written.is_err();
    }

    /// UNKNOWN-ATTRIBUTES (RFC 8489 §14.9): the 16-bit types the request carried but we
    /// do not understand.
    pub fn add_unknown_attributes(&mut self, types: &[u16]) {
        let written = self.attribute(attr::UNKNOWN_ATTRIBUTES, types.len() * 2, |buf| {
            for t in types {
                buf.extend_from_slice(&t.to_be_bytes());
            }
        });
        self.overflowed |= written.is_err();
    }

    /// MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 under `key` over the message so far,
    /// with the header length already counting this 24-byte attribute.
    pub fn add_message_integrity(&mut self, key: &[u8]) {
        if self.buf.len() + 24 > MAX_MESSAGE_LEN {
            self.overflowed = true;
            return;
        }
        self.set_length(self.buf.len() + 24 - HEADER_LEN);
        let (header, body) = self.buf.split_at(HEADER_LEN);
        let mac = integrity::hmac_sha1(key, header, body);
        self.add(attr::MESSAGE_INTEGRITY, &mac);
    }

    /// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full 32 bytes.
    pub fn add_message_integrity_sha256(&mut self, key: &[u8]) {
        if self.buf.len() + 36 > MAX_MESSAGE_LEN {
            self.overflowed = true;
            return;
        }
        self.set_length(self.buf.len() + 36 - HEADER_LEN);
        let (header, body) = self.buf.split_at(HEADER_LEN);
        let mac = integrity::hmac_sha256(key, header, body);
        self.add(attr::MESSAGE_INTEGRITY_SHA256, &mac);
    }

    /// FINGERPRINT (RFC 8489 §14.7); must be the last attribute.
    pub fn add_fingerprint(&mut self) {
        if self.buf.len() + 8 > MAX_MESSAGE_LEN {
            self.overflowed = true;
            return;
        }
        self.set_length(self.buf.len() + 8 - HEADER_LEN);
        let crc = integrity::fingerprint(self.buf);
        self.add(attr::FINGERPRINT, &crc.to_be_bytes());
    }
}
