//! STUN messages (RFC 8489): a borrowed, allocation-free parser ([`Message`]) and an
//! encoder that writes into a caller-owned buffer ([`MessageBuilder`]).
//!
//! This is the hot path of every request the relay answers, so parsing never
//! allocates: attribute positions live in a fixed-size array inside [`Message`],
//! and values are slices of the caller's receive buffer.

pub mod attr;
mod builder;
pub mod integrity;
mod message;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod vectors;

pub use builder::{BuildError, MessageBuilder};
pub use message::{Message, ParseError, RawAttribute, MAX_ATTRIBUTES};

/// RFC 8489 §5: fixed value in bytes 4..8 of every STUN message.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// RFC 8489 §5: the header is 20 bytes (type, length, cookie, 96-bit transaction id).
pub const HEADER_LEN: usize = 20;
/// The largest message the 16-bit length field can describe (length is a multiple of 4).
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + 0xFFFC;

/// The 96-bit transaction id that pairs a response with its request (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TransactionId(pub [u8; 12]);

/// The message class, carried in bits C1 C0 of the message type (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    /// A request (0b00): answered by a success or error response.
    Request,
    /// An indication (0b01): never answered (Send, Data).
    Indication,
    /// A success response (0b10).
    Success,
    /// An error response (0b11), carrying ERROR-CODE.
    Error,
}

impl Class {
    /// The two class bits as the number C1C0 (0b00 request … 0b11 error response).
    pub fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    /// Inverse of [`Class::bits`]; only the low two bits are looked at.
    pub fn from_bits(bits: u16) -> Class {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// STUN/TURN method numbers (12 bits). RFC 8489 §18.2, RFC 8656 §17.
pub mod method {
    /// Binding (RFC 8489 §3): tells the client its reflexive address; no credentials.
    pub const BINDING: u16 = 0x001;
    /// Allocate (RFC 8656 §7): create an allocation and its relayed address(es).
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh (RFC 8656 §8): extend an allocation's lifetime, or delete it with 0.
    pub const REFRESH: u16 = 0x004;
    /// Send (RFC 8656 §11): an indication carrying data from the client to a peer.
    pub const SEND: u16 = 0x006;
    /// Data (RFC 8656 §11): an indication carrying a peer's data to the client.
    pub const DATA: u16 = 0x007;
    /// CreatePermission (RFC 8656 §10): allow peer IPs to exchange data.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind (RFC 8656 §12): bind a channel number to a peer address.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Builds the 14-bit message type from class and method.
///
/// RFC 8489 §5: the method bits M11..M0 and class bits C1 C0 are interleaved as
/// `0 0 M11 M10 M9 M8 M7 C1 M6 M5 M4 C0 M3 M2 M1 M0` (most significant bit first).
pub fn message_type(class: Class, method: u16) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

/// Splits a message type into (class, 12-bit method); inverse of [`message_type`].
pub fn split_message_type(typ: u16) -> (Class, u16) {
    let method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
    let class = ((typ >> 4) & 0b01) | ((typ >> 7) & 0b10);
    (Class::from_bits(class), method)
}

/// RFC 7983 demultiplexing: a STUN message starts with two zero bits and carries the
/// magic cookie in bytes 4..8; anything shorter than a header cannot be STUN.
pub fn is_stun(buf: &[u8]) -> bool {
    match buf {
        [b0, _, _, _, c0, c1, c2, c3, ..] if buf.len() >= HEADER_LEN => {
            b0 & 0xC0 == 0 && u32::from_be_bytes([*c0, *c1, *c2, *c3]) == MAGIC_COOKIE
        }
        _ => false,
    }
}
