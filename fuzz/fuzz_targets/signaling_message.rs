//! Any text frame through the signaling server's client-message decoder
//! (`turnpike_signaling::protocol::parse_client`): never a panic, an accepted message
//! has the server's version and a bounded id, and a refusal encodes as the error frame
//! the server sends back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turnpike_signaling::protocol::{
    parse_client, ServerBody, ServerMessage, MAX_ID_BYTES, VERSION,
};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 by the time the server sees them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client(text) {
        Ok(m) => {
            assert_eq!(m.v, VERSION);
            assert!(m.id.as_ref().is_none_or(|id| id.len() <= MAX_ID_BYTES));
        }
        Err(e) => {
            assert!(e.re.as_ref().is_none_or(|id| id.len() <= MAX_ID_BYTES));
            let msg = ServerMessage {
                v: VERSION,
                seq: 0,
                body: ServerBody::error(e.code, e.reason, e.re),
            };
            serde_json::to_string(&msg).expect("an error frame serializes");
        }
    }
});
