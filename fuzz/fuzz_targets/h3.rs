//! The HTTP/3 CONNECT-UDP codecs (turnpike_proto::h3) under arbitrary bytes: never a
//! panic, and what the relay encodes decodes back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turnpike::proto::h3::{connect_udp, datagram, frame, huffman, qpack, varint};

fuzz_target!(|data: &[u8]| {
    let _ = varint::read(data);
    let _ = frame::parse_frame(data, 16 * 1024);
    let _ = frame::Settings::parse(data);
    let _ = datagram::parse_quic_datagram(data);
    let _ = datagram::parse_capsule(data, 1500);
    let _ = datagram::split_context(data);
    let mut out = Vec::new();
    let _ = huffman::decode(data, &mut out);
    if let Ok(fields) = qpack::decode(data, 16 * 1024) {
        let _ = connect_udp::parse_request(&fields);
    }
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = connect_udp::parse_path(path);
    }
    // A response the relay writes, with fuzzed header values, decodes to itself.
    let value = String::from_utf8_lossy(data);
    let status = data.first().map_or(200, |&b| 100 + u16::from(b));
    let mut section = Vec::new();
    qpack::encode_response(status, &[("proxy-status", &value)], &mut section);
    let fields = qpack::decode(&section, usize::MAX).expect("our own section decodes");
    assert_eq!(fields[0].value, status.to_string().into_bytes());
    assert_eq!(fields[1].value, value.as_bytes());
});
