//! Pools of real SRTP packets, encrypted once before any run so the benchmark measures
//! the relay and not AES.
//!
//! How a receiver knows when a packet was sent without decrypting it: SRTP encrypts
//! only the RTP payload; the 12-byte RTP header stays in clear (RFC 3711 §3.1). Pool
//! packet `k` carries RTP sequence number `k` (one SSRC per pool, 65 536 packets, one
//! full sequence cycle), so the sequence number read from the clear header *is* the
//! pool index. The sender records the send time of index `k` in a 65 536-entry table
//! each time it sends it; the receiver looks it up. Packets stay byte-exact, valid
//! SRTP (nothing appended after the auth tag), and the table is right as long as a
//! packet arrives before its index is sent again — 65 536 sends later, i.e. ≥ 160 ms
//! at 400 kpps, far above any queueing delay that is not already counted as loss.

use rtc_srtp::context::Context;
use rtc_srtp::protection_profile::ProtectionProfile;

/// Packets per pool: one per 16-bit RTP sequence number.
pub const POOL_LEN: usize = 1 << 16;
/// RTP header (12) in front, SRTP auth tag (10, AES_CM_128_HMAC_SHA1_80) behind.
const RTP_HEADER: usize = 12;
const AUTH_TAG: usize = 10;

/// One pool: `POOL_LEN` SRTP packets of `size` bytes each, stored back to back.
pub struct Pool {
    pub size: usize,
    pub ssrc: u32,
    bytes: Vec<u8>,
}

impl Pool {
    /// Encrypts `POOL_LEN` RTP packets of `size` bytes on the wire (header + payload +
    /// tag) with a fixed test key: payload type `pt`, SSRC `ssrc`.
    pub fn encrypt(size: usize, pt: u8, ssrc: u32) -> Result<Pool, String> {
        let payload_len = size
            .checked_sub(RTP_HEADER + AUTH_TAG)
            .ok_or("packet too small for RTP + SRTP tag")?;
        let key: Vec<u8> = (0u8..16).collect();
        let salt: Vec<u8> = (100u8..114).collect();
        let provider = rtc_srtp::crypto::default_provider().map_err(|e| e.to_string())?;
        let mut ctx = Context::new(
            &key,
            &salt,
            ProtectionProfile::Aes128CmHmacSha1_80,
            None,
            None,
            provider.crypto(),
        )
        .map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(size * POOL_LEN);
        let mut plain = vec![0u8; RTP_HEADER + payload_len];
        for k in 0..POOL_LEN {
            let seq = k as u16;
            // RFC 3550 §5.1: V=2, no padding/extension/CSRC, marker off.
            plain[0] = 0x80;
            plain[1] = pt & 0x7F;
            plain[2..4].copy_from_slice(&seq.to_be_bytes());
            plain[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            plain[8..12].copy_from_slice(&ssrc.to_be_bytes());
            for (i, b) in plain[RTP_HEADER..].iter_mut().enumerate() {
                *b = (i as u8) ^ (seq as u8);
            }
            let srtp = ctx.encrypt_rtp(&plain).map_err(|e| e.to_string())?;
            if srtp.len() != size {
                return Err(format!("SRTP packet is {} B, expected {size}", srtp.len()));
            }
            bytes.extend_from_slice(&srtp);
        }
        Ok(Pool { size, ssrc, bytes })
    }

    /// Packet `k` (taken modulo the pool length).
    pub fn packet(&self, k: usize) -> &[u8] {
        let k = k % POOL_LEN;
        self.bytes
            .get(k * self.size..(k + 1) * self.size)
            .unwrap_or(&[])
    }
}

/// The pool index (= RTP sequence number) of an SRTP packet, if it is one of ours.
pub fn index_of(srtp: &[u8], ssrc: u32) -> Option<usize> {
    match srtp {
        [0x80, _, s0, s1, _, _, _, _, c0, c1, c2, c3, ..]
            if u32::from_be_bytes([*c0, *c1, *c2, *c3]) == ssrc =>
        {
            Some(usize::from(u16::from_be_bytes([*s0, *s1])))
        }
        _ => None,
    }
}
