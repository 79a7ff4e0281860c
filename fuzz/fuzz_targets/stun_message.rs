//! Any bytes through the STUN parser and every attribute decoder: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turnpike::proto::stun::{attr, Message};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let tid = msg.transaction_id();
    for a in msg.attributes() {
        let _ = attr::decode_address(a.value);
        let _ = attr::decode_xor_address(a.value, &tid);
        let _ = attr::decode_u32(a.value);
        let _ = attr::decode_str(a.value);
        let _ = attr::decode_error_code(a.value);
        let _ = attr::decode_requested_transport(a.value);
        let _ = attr::decode_family(a.value);
        let _ = attr::decode_even_port(a.value);
        let _ = attr::decode_channel_number(a.value);
        let _ = attr::decode_password_algorithm(a.value);
        let _ = attr::decode_password_algorithms(a.value);
    }
    let _ = msg.unknown_required(&[attr::USERNAME]);
    let _ = msg.check_integrity_sha1(b"key");
    let _ = msg.check_integrity_sha256(b"key");
});
