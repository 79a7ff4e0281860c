//! Any bytes through the ChannelData parser; a parsed message re-encodes to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use turnpike::proto::channel_data;

fuzz_target!(|data: &[u8]| {
    if let Ok((channel, payload)) = channel_data::parse(data) {
        let mut header = [0u8; 4];
        channel_data::write_header(&mut header, channel, payload.len()).expect("parsed values re-encode");
        assert_eq!(&header[..], &data[..4]);
    }
});
