//! The Huffman code of HPACK (RFC 7541 §5.2, Appendix B), which QPACK string literals
//! use (RFC 9204 §4.1.2). Only decoding: the relay's own header fields are sent as
//! plain literals.
//!
//! The code table is RFC 7541's Appendix B, as the `httlib-huffman` crate spells it.
//! The decoder is this module's, bit by bit against that table: header blocks are
//! decoded once per tunnel, so clarity and strict validation of hostile input matter
//! more than speed here.

use std::sync::OnceLock;

use httlib_huffman::encoder::table::ENCODE_TABLE;

/// The longest code (RFC 7541 Appendix B).
const MAX_CODE_BITS: usize = 30;
/// The end-of-string symbol, which must never appear inside a string.
const EOS: u16 = 256;

/// Why a Huffman string was refused (RFC 7541 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// A bit sequence matches no code within 30 bits.
    InvalidCode,
    /// The EOS symbol appeared inside the string.
    EndOfStringInside,
    /// Padding longer than 7 bits, or not made of the most significant bits of EOS (1s).
    BadPadding,
}

/// Per code length, the codes of that length with their symbols, sorted by code.
fn codes_by_length() -> &'static [Vec<(u32, u16)>] {
    static TABLE: OnceLock<Vec<Vec<(u32, u16)>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_length = vec![Vec::new(); MAX_CODE_BITS + 1];
        for (symbol, &(bits, code)) in ENCODE_TABLE.iter().enumerate() {
            if let Some(codes) = by_length.get_mut(usize::from(bits)) {
                codes.push((code, symbol as u16));
            }
        }
        for codes in &mut by_length {
            codes.sort_unstable();
        }
        by_length
    })
}

/// Decodes `src` and appends the bytes to `out`.
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let table = codes_by_length();
    let (mut code, mut bits) = (0u32, 0usize);
    for byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            bits += 1;
            let Some(codes) = table.get(bits) else {
                return Err(HuffmanError::InvalidCode);
            };
            if let Ok(i) = codes.binary_search_by_key(&code, |&(c, _)| c) {
                match codes[i].1 {
                    EOS => return Err(HuffmanError::EndOfStringInside),
                    // Every other symbol is a byte value (0..=255).
                    symbol => out.push(symbol as u8),
                }
                (code, bits) = (0, 0);
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all 1s (a prefix of EOS).
    if bits > 7 || code != (1u32 << bits) - 1 {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    #[test]
    fn rfc_7541_appendix_c_4_examples() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(
            decoded(&hex("f1e3c2e5f23a6ba0ab90f4ff")).unwrap(),
            b"www.example.com"
        );
        assert_eq!(decoded(&hex("a8eb10649cbf")).unwrap(), b"no-cache");
        assert_eq!(decoded(&hex("25a849e95ba97d7f")).unwrap(), b"custom-key");
        assert_eq!(
            decoded(&hex("25a849e95bb8e8b4bf")).unwrap(),
            b"custom-value"
        );
    }

    #[test]
    fn every_byte_value_round_trips_through_an_independent_encoder() {
        let all: Vec<u8> = (0..=255).collect();
        let mut encoded = Vec::new();
        httlib_huffman::encode(&all, &mut encoded).unwrap();
        assert_eq!(decoded(&encoded).unwrap(), all);
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        // "a" is 00011 (5 bits): padded with 1s it is 0x1F; with 0s it is bad padding.
        assert_eq!(decoded(&[0x1F]).unwrap(), b"a");
        assert_eq!(decoded(&[0x18]), Err(HuffmanError::BadPadding));
        // A whole byte of padding (8 bits of 1s) is too long.
        assert_eq!(decoded(&[0x1F, 0xFF]), Err(HuffmanError::BadPadding));
        // EOS (30 ones) inside a string.
        assert_eq!(
            decoded(&[0xFF, 0xFF, 0xFF, 0xFC]),
            Err(HuffmanError::EndOfStringInside)
        );
    }
}
