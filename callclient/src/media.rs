//! The media a call sends and what it makes of the media it receives.
//!
//! Audio is G.711 μ-law (PCMU, RTP payload type 0, RFC 3551 §4.5.14): 8000 samples/s,
//! one byte per sample, 20 ms (160 samples) per packet. It needs no codec library, every
//! WebRTC stack negotiates it, and a received tone can be checked by decoding it. Instead
//! of the tone a call can send a fixed ASCII marker as payload, so a test can look for the
//! plaintext in what the relay forwarded.

use serde::Serialize;

/// RFC 3551 §6: PCMU's static payload type.
pub const PCMU_PAYLOAD_TYPE: u8 = 0;
/// RFC 3551 §4.5.14: 8000 Hz clock.
pub const PCMU_CLOCK_RATE: u32 = 8000;
/// 20 ms of 8 kHz audio, the usual packet time (RFC 3551 §4.2 default `ptime`).
pub const SAMPLES_PER_PACKET: usize = 160;

/// μ-law of a zero sample.
pub const SILENCE: u8 = 0xFF;

/// ITU-T G.711 μ-law: linear samples above this are clipped before the bias is added.
const CLIP: i32 = 32635;
/// ITU-T G.711 μ-law bias (33 << 2), which makes the segment boundaries powers of two.
const BIAS: i32 = 0x84;

/// Encode one 16-bit linear sample as G.711 μ-law.
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    let biased = magnitude.min(CLIP) + BIAS;
    // The segment (exponent) is the position of the highest set bit above bit 7; `biased`
    // lies in 0x84..=0x7FFF, so it is 0..=7.
    let exponent = (31 - biased.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (biased >> (exponent + 3)) & 0x0F;
    // G.711 transmits the one's complement (so silence is 0xFF, not a run of zeros).
    !(sign | (exponent << 4) | mantissa) as u8
}

/// Decode one G.711 μ-law byte to a 16-bit linear sample.
pub fn ulaw_decode(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = i32::from((byte >> 4) & 0x07);
    let mantissa = i32::from(byte & 0x0F);
    let magnitude = (((mantissa << 3) + BIAS) << exponent) - BIAS;
    // At most ((15 << 3) + 0x84) << 7 - 0x84 = 32124, so it fits an i16.
    let magnitude = magnitude as i16;
    if byte & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    }
}

/// What each RTP packet carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A sine tone of this frequency (Hz), PCMU-encoded.
    Tone(f64),
    /// This byte string repeated to fill the packet: plaintext a test can search for.
    Marker(Vec<u8>),
}

/// Makes the payload of each successive packet.
pub struct PayloadSource {
    payload: Payload,
    /// Samples generated so far (the tone's phase).
    sample_index: u64,
}

impl PayloadSource {
    pub fn new(payload: Payload) -> PayloadSource {
        PayloadSource {
            payload,
            sample_index: 0,
        }
    }

    /// The next 20 ms packet payload (`SAMPLES_PER_PACKET` bytes).
    pub fn next_packet(&mut self) -> Vec<u8> {
        let start = self.sample_index;
        self.sample_index += SAMPLES_PER_PACKET as u64;
        match &self.payload {
            Payload::Tone(hz) => (start..start + SAMPLES_PER_PACKET as u64)
                .map(|n| {
                    let t = n as f64 / f64::from(PCMU_CLOCK_RATE);
                    // -10 dBFS or so: loud enough to hear, far from clipping.
                    let sample =
                        0.3 * f64::from(i16::MAX) * (2.0 * std::f64::consts::PI * hz * t).sin();
                    ulaw_encode(sample as i16)
                })
                .collect(),
            Payload::Marker(marker) if !marker.is_empty() => marker
                .iter()
                .copied()
                .cycle()
                .take(SAMPLES_PER_PACKET)
                .collect(),
            // An empty marker: silence.
            Payload::Marker(_) => vec![SILENCE; SAMPLES_PER_PACKET],
        }
    }
}

/// What arrived, decrypted, on the remote track.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Received {
    /// RTP packets delivered to the application.
    pub packets: u64,
    /// Their payload bytes (after SRTP decryption, without RTP headers).
    pub payload_bytes: u64,
    /// The sender's SSRC and payload type, from the last packet.
    pub ssrc: Option<u32>,
    pub payload_type: Option<u8>,
    /// Packets whose payload contained the marker we were told to look for.
    pub marker_packets: u64,
    /// Frequency of the received audio, from the zero crossings of the decoded PCMU
    /// (meaningful when the peer sent a tone).
    pub tone_hz: Option<f64>,
    /// The longest time between two consecutive received packets, in milliseconds: how
    /// long the audio stopped at worst (a 20 ms packet interval means a steady stream).
    pub max_gap_ms: u64,
    #[serde(skip)]
    last_arrival: Option<std::time::Instant>,
    #[serde(skip)]
    zero_crossings: u64,
    #[serde(skip)]
    samples: u64,
    #[serde(skip)]
    last_positive: Option<bool>,
}

impl Received {
    /// Account for one received RTP packet.
    pub fn record(&mut self, ssrc: u32, payload_type: u8, payload: &[u8], marker: Option<&[u8]>) {
        let now = std::time::Instant::now();
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).as_millis() as u64;
            self.max_gap_ms = self.max_gap_ms.max(gap);
        }
        self.last_arrival = Some(now);
        self.packets += 1;
        self.payload_bytes += payload.len() as u64;
        self.ssrc = Some(ssrc);
        self.payload_type = Some(payload_type);
        if let Some(marker) = marker {
            if !marker.is_empty() && payload.windows(marker.len()).any(|w| w == marker) {
                self.marker_packets += 1;
            }
        }
        if payload_type == PCMU_PAYLOAD_TYPE {
            for &byte in payload {
                let positive = ulaw_decode(byte) >= 0;
                if self.last_positive.is_some_and(|last| last != positive) {
                    self.zero_crossings += 1;
                }
                self.last_positive = Some(positive);
                self.samples += 1;
            }
            if self.samples > 0 {
                let seconds = self.samples as f64 / f64::from(PCMU_CLOCK_RATE);
                // A sine crosses zero twice per period.
                self.tone_hz = Some(self.zero_crossings as f64 / 2.0 / seconds);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        // Silence is 0xFF; full scale is 0x80 / 0x00 (ITU-T G.711 Table 2a).
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
    }

    #[test]
    fn ulaw_round_trip_stays_within_the_segment_step() {
        for sample in (i16::MIN..=i16::MAX).step_by(97) {
            let back = ulaw_decode(ulaw_encode(sample));
            let error = (i32::from(sample) - i32::from(back)).abs();
            // The coarsest segment has steps of 1024; clipping adds up to 32767-32124.
            let bound = (i32::from(sample).abs() / 16).max(8) + 700;
            assert!(error <= bound, "{sample} -> {back}");
        }
    }

    #[test]
    fn a_received_tone_is_measured_at_its_frequency() {
        let mut source = PayloadSource::new(Payload::Tone(440.0));
        let mut received = Received::default();
        for _ in 0..50 {
            received.record(7, PCMU_PAYLOAD_TYPE, &source.next_packet(), None);
        }
        let hz = received.tone_hz.expect("PCMU samples were recorded");
        assert!((hz - 440.0).abs() < 5.0, "{hz}");
        assert_eq!(received.packets, 50);
        assert_eq!(received.payload_bytes, 50 * SAMPLES_PER_PACKET as u64);
    }

    #[test]
    fn marker_payloads_are_counted_only_when_they_contain_the_marker() {
        let mut source = PayloadSource::new(Payload::Marker(b"TURNPIKE-PLAINTEXT".to_vec()));
        let packet = source.next_packet();
        assert_eq!(packet.len(), SAMPLES_PER_PACKET);
        let mut received = Received::default();
        received.record(1, 0, &packet, Some(b"TURNPIKE-PLAINTEXT"));
        received.record(1, 0, &[0u8; 160], Some(b"TURNPIKE-PLAINTEXT"));
        assert_eq!(received.marker_packets, 1);
        assert_eq!(received.packets, 2);
    }
}
