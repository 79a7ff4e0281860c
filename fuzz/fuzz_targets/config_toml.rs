//! Any text through the relay's config loader, as `turnpike check-config` and `serve`
//! use it (`ConfigFile::parse`, then `validate`): errors are fine, panics are not.
#![no_main]
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use turnpike::config::{ConfigFile, Origin};

fuzz_target!(|data: &[u8]| {
    // `ConfigFile::read` refuses a file that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = Origin::File(PathBuf::from("fuzz.toml"));
    match ConfigFile::parse(origin, text) {
        Ok(file) => match file.validate() {
            Ok(settings) => {
                let _ = settings.summary();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        },
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
