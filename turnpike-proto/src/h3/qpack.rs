//! QPACK (RFC 9204) with the static table only.
//!
//! The relay announces `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0` and
//! `SETTINGS_QPACK_BLOCKED_STREAMS = 0`, so a peer may not use the dynamic table: every
//! field section must have a Required Insert Count of 0 and may only use static
//! references and literals (RFC 9204 §2.1.2, §4.5). That is all a CONNECT-UDP server
//! needs to read one request per tunnel and write one response; it also means the
//! encoder and decoder streams carry nothing (a peer's instructions there are errors
//! this module does not need to parse: see [`crate::h3::frame`]).

use super::huffman::{self, HuffmanError};

/// A decoded header or trailer field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Lower-case name (HTTP/3 forbids upper case, RFC 9114 §4.2); pseudo-header names
    /// begin with ':'.
    pub name: Vec<u8>,
    /// Value bytes, as sent.
    pub value: Vec<u8>,
}

/// Why a field section could not be decoded: QPACK_DECOMPRESSION_FAILED (RFC 9204 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QpackError {
    /// The section ends inside a representation.
    Truncated,
    /// An integer does not fit the decoder (over 2^62).
    IntegerOverflow,
    /// A reference to the dynamic table, which this decoder forbids.
    DynamicTable,
    /// A static index past the table's end.
    BadStaticIndex,
    /// A Huffman-coded string is invalid.
    Huffman(HuffmanError),
    /// More decoded bytes than the announced SETTINGS_MAX_FIELD_SECTION_SIZE.
    TooLarge,
}

/// RFC 9204 Appendix A: the static table, indexed from 0.
pub const STATIC_TABLE: [(&str, &str); 99] = [
    (":authority", ""),
    (":path", "/"),
    ("age", "0"),
    ("content-disposition", ""),
    ("content-length", "0"),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("referer", ""),
    ("set-cookie", ""),
    (":method", "CONNECT"),
    (":method", "DELETE"),
    (":method", "GET"),
    (":method", "HEAD"),
    (":method", "OPTIONS"),
    (":method", "POST"),
    (":method", "PUT"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "103"),
    (":status", "200"),
    (":status", "304"),
    (":status", "404"),
    (":status", "503"),
    ("accept", "*/*"),
    ("accept", "application/dns-message"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-headers", "cache-control"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-origin", "*"),
    ("cache-control", "max-age=0"),
    ("cache-control", "max-age=2592000"),
    ("cache-control", "max-age=604800"),
    ("cache-control", "no-cache"),
    ("cache-control", "no-store"),
    ("cache-control", "public, max-age=31536000"),
    ("content-encoding", "br"),
    ("content-encoding", "gzip"),
    ("content-type", "application/dns-message"),
    ("content-type", "application/javascript"),
    ("content-type", "application/json"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "image/gif"),
    ("content-type", "image/jpeg"),
    ("content-type", "image/png"),
    ("content-type", "text/css"),
    ("content-type", "text/html; charset=utf-8"),
    ("content-type", "text/plain"),
    ("content-type", "text/plain;charset=utf-8"),
    ("range", "bytes=0-"),
    ("strict-transport-security", "max-age=31536000"),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains",
    ),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains; preload",
    ),
    ("vary", "accept-encoding"),
    ("vary", "origin"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    (":status", "100"),
    (":status", "204"),
    (":status", "206"),
    (":status", "302"),
    (":status", "400"),
    (":status", "403"),
    (":status", "421"),
    (":status", "425"),
    (":status", "500"),
    ("accept-language", ""),
    ("access-control-allow-credentials", "FALSE"),
    ("access-control-allow-credentials", "TRUE"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "get"),
    ("access-control-allow-methods", "get, post, options"),
    ("access-control-allow-methods", "options"),
    ("access-control-expose-headers", "content-length"),
    ("access-control-request-headers", "content-type"),
    ("access-control-request-method", "get"),
    ("access-control-request-method", "post"),
    ("alt-svc", "clear"),
    ("authorization", ""),
    (
        "content-security-policy",
        "script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    ("early-data", "1"),
    ("expect-ct", ""),
    ("forwarded", ""),
    ("if-range", ""),
    ("origin", ""),
    ("purpose", "prefetch"),
    ("server", ""),
    ("timing-allow-origin", "*"),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", ""),
    ("x-forwarded-for", ""),
    ("x-frame-options", "deny"),
    ("x-frame-options", "sameorigin"),
];

/// Static index of the name `:status` (with value 103).
const STATUS_NAME: u64 = 24;

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) from `buf` at `*pos`.
fn prefix_int(buf: &[u8], pos: &mut usize, n: u32) -> Result<u64, QpackError> {
    let first = *buf.get(*pos).ok_or(QpackError::Truncated)?;
    *pos += 1;
    let max = (1u64 << n) - 1;
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(QpackError::Truncated)?;
        *pos += 1;
        if shift > 55 {
            return Err(QpackError::IntegerOverflow);
        }
        value = value
            .checked_add(u64::from(b & 0x7F) << shift)
            .ok_or(QpackError::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Appends `value` with an `n`-bit prefix whose other (high) bits are `flags`.
fn write_prefix_int(out: &mut Vec<u8>, flags: u8, n: u32, value: u64) {
    let max = (1u64 << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7F) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal whose length has an `n`-bit prefix preceded by the H (Huffman)
/// bit (RFC 9204 §4.1.2). Its length is bounded by the section's, and Huffman at most
/// expands 5 bits to a byte, so a hostile length cannot make it allocate much.
fn string(buf: &[u8], pos: &mut usize, n: u32) -> Result<Vec<u8>, QpackError> {
    let huffman = buf.get(*pos).ok_or(QpackError::Truncated)? & (1 << n) != 0;
    let len = prefix_int(buf, pos, n)?;
    let len = usize::try_from(len).map_err(|_| QpackError::Truncated)?;
    let end = pos.checked_add(len).ok_or(QpackError::Truncated)?;
    let raw = buf.get(*pos..end).ok_or(QpackError::Truncated)?;
    *pos = end;
    if huffman {
        let mut out = Vec::with_capacity(raw.len() * 8 / 5);
        huffman::decode(raw, &mut out).map_err(QpackError::Huffman)?;
        Ok(out)
    } else {
        Ok(raw.to_vec())
    }
}

fn static_entry(index: u64) -> Result<(&'static str, &'static str), QpackError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| STATIC_TABLE.get(i))
        .copied()
        .ok_or(QpackError::BadStaticIndex)
}

/// Decodes one field section (a HEADERS frame's payload). `max_size` bounds the decoded
/// size as RFC 9114 §4.2.2 counts it (name + value + 32 per field).
pub fn decode(section: &[u8], max_size: usize) -> Result<Vec<Field>, QpackError> {
    let mut pos = 0;
    // Encoded Required Insert Count (8-bit prefix), then Sign + Delta Base (7-bit):
    // with no dynamic table the first must be 0, and the base is then meaningless.
    if prefix_int(section, &mut pos, 8)? != 0 {
        return Err(QpackError::DynamicTable);
    }
    prefix_int(section, &mut pos, 7)?;
    let mut fields = Vec::new();
    let mut size = 0usize;
    while let Some(&first) = section.get(pos) {
        let field = if first & 0x80 != 0 {
            // 1Txxxxxx: indexed field line; T = static.
            if first & 0x40 == 0 {
                return Err(QpackError::DynamicTable);
            }
            let (name, value) = static_entry(prefix_int(section, &mut pos, 6)?)?;
            Field {
                name: name.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            }
        } else if first & 0x40 != 0 {
            // 01NTxxxx: literal with name reference; T = static.
            if first & 0x10 == 0 {
                return Err(QpackError::DynamicTable);
            }
            let (name, _) = static_entry(prefix_int(section, &mut pos, 4)?)?;
            Field {
                name: name.as_bytes().to_vec(),
                value: string(section, &mut pos, 7)?,
            }
        } else if first & 0x20 != 0 {
            // 001NHxxx: literal with literal name.
            Field {
                name: string(section, &mut pos, 3)?,
                value: string(section, &mut pos, 7)?,
            }
        } else {
            // 0001xxxx and 0000xxxx: post-base references, dynamic table only.
            return Err(QpackError::DynamicTable);
        };
        size += field.name.len() + field.value.len() + 32;
        if size > max_size {
            return Err(QpackError::TooLarge);
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Encodes a request field section of plain literals (what a client sends: CONNECT-UDP
/// pseudo-headers and a few fields, once per tunnel).
pub fn encode_request(fields: &[(&str, &str)], out: &mut Vec<u8>) {
    // Required Insert Count 0, Delta Base 0.
    out.extend_from_slice(&[0, 0]);
    for (name, value) in fields {
        write_literal(out, name, value);
    }
}

/// A literal field line with a literal name, N = 0, H = 0 on both.
fn write_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    write_prefix_int(out, 0b0010_0000, 3, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    write_prefix_int(out, 0, 7, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

/// Encodes a response field section: `:status` then `headers` (lower-case names), with
/// static references where the table has them and plain literals otherwise.
pub fn encode_response(status: u16, headers: &[(&str, &str)], out: &mut Vec<u8>) {
    // Required Insert Count 0, Delta Base 0.
    out.extend_from_slice(&[0, 0]);
    let status_text = status.to_string();
    match STATIC_TABLE
        .iter()
        .position(|&(n, v)| n == ":status" && v == status_text)
    {
        Some(i) => write_prefix_int(out, 0b1100_0000, 6, i as u64),
        None => {
            // Literal with static name reference, N = 0, H = 0 on the value.
            write_prefix_int(out, 0b0101_0000, 4, STATUS_NAME);
            write_prefix_int(out, 0, 7, status_text.len() as u64);
            out.extend_from_slice(status_text.as_bytes());
        }
    }
    for (name, value) in headers {
        write_literal(out, name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Field {
        Field {
            name: name.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn rfc_9204_appendix_b_1_literal_with_static_name_reference() {
        // B.1: ":path: /index.html" as a literal with name reference to static 1.
        let section = [
            0x00, 0x00, 0x51, 0x0b, 0x2f, 0x69, 0x6e, 0x64, 0x65, 0x78, 0x2e, 0x68, 0x74, 0x6d,
            0x6c,
        ];
        assert_eq!(
            decode(&section, 4096).unwrap(),
            vec![field(":path", "/index.html")]
        );
    }

    #[test]
    fn indexed_huffman_and_literal_names_decode() {
        // :method CONNECT (static 15), :scheme https (static 23), :authority with a
        // Huffman value "www.example.com", and "capsule-protocol: ?1" as literals.
        let mut section = vec![0x00, 0x00, 0xC0 | 15, 0xC0 | 23, 0x50, 0x80 | 12];
        section.extend_from_slice(&[
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ]);
        section.extend_from_slice(&[0x27, 0x09]);
        section.extend_from_slice(b"capsule-protocol");
        section.push(0x02);
        section.extend_from_slice(b"?1");
        assert_eq!(
            decode(&section, 4096).unwrap(),
            vec![
                field(":method", "CONNECT"),
                field(":scheme", "https"),
                field(":authority", "www.example.com"),
                field("capsule-protocol", "?1"),
            ]
        );
    }

    #[test]
    fn dynamic_references_and_bad_input_are_refused() {
        // Required Insert Count 1.
        assert_eq!(decode(&[0x01, 0x00], 4096), Err(QpackError::DynamicTable));
        // Indexed field line, dynamic (T = 0).
        assert_eq!(decode(&[0, 0, 0x80], 4096), Err(QpackError::DynamicTable));
        // Post-base indexed.
        assert_eq!(decode(&[0, 0, 0x10], 4096), Err(QpackError::DynamicTable));
        // Static index 99 does not exist.
        assert_eq!(
            decode(&[0, 0, 0xFF, 0x24], 4096),
            Err(QpackError::BadStaticIndex)
        );
        // A literal that claims more bytes than there are.
        assert_eq!(
            decode(&[0, 0, 0x51, 0x0b, b'/'], 4096),
            Err(QpackError::Truncated)
        );
        // An integer continuation that never ends within 2^62.
        let mut endless = vec![0, 0, 0xFF];
        endless.extend_from_slice(&[0xFF; 12]);
        assert_eq!(decode(&endless, 4096), Err(QpackError::IntegerOverflow));
    }

    #[test]
    fn the_size_limit_counts_names_values_and_32_per_field() {
        let mut section = vec![0, 0];
        encode_literal(&mut section, "x-long", &"a".repeat(100));
        assert!(decode(&section[..], 138).is_ok());
        assert_eq!(decode(&section[..], 137), Err(QpackError::TooLarge));
    }

    fn encode_literal(out: &mut Vec<u8>, name: &str, value: &str) {
        write_literal(out, name, value);
    }

    #[test]
    fn encoded_requests_decode_to_what_was_meant() {
        let fields = [
            (":method", "CONNECT"),
            (":path", "/x"),
            ("capsule-protocol", "?1"),
        ];
        let mut out = Vec::new();
        encode_request(&fields, &mut out);
        let decoded = decode(&out, 4096).unwrap();
        let expected: Vec<Field> = fields.iter().map(|(n, v)| field(n, v)).collect();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn encoded_responses_decode_to_what_was_meant() {
        for status in [200u16, 403, 404, 405, 501] {
            let mut out = Vec::new();
            encode_response(status, &[("capsule-protocol", "?1")], &mut out);
            let fields = decode(&out, 4096).unwrap();
            assert_eq!(
                fields,
                vec![
                    field(":status", &status.to_string()),
                    field("capsule-protocol", "?1")
                ]
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_sections_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decode(&bytes, 4096);
        }

        #[test]
        fn literal_fields_round_trip(
            name in "[a-z][a-z0-9-]{0,20}",
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let mut section = vec![0, 0];
            write_prefix_int(&mut section, 0b0010_0000, 3, name.len() as u64);
            section.extend_from_slice(name.as_bytes());
            write_prefix_int(&mut section, 0, 7, value.len() as u64);
            section.extend_from_slice(&value);
            let fields = decode(&section, 1 << 20).unwrap();
            proptest::prop_assert_eq!(fields, vec![Field { name: name.into_bytes(), value }]);
        }
    }
}
