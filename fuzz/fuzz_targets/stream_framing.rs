//! Any byte stream through the TCP/TLS framer: frames never exceed the buffer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turnpike::proto::framing::{next_frame, Frame};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match next_frame(rest) {
            Frame::Complete { consume, message_len } => {
                assert!(message_len <= consume && consume <= rest.len() && consume > 0);
                rest = &rest[consume..];
            }
            Frame::Incomplete | Frame::Invalid => break,
        }
    }
});
