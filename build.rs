//! With the `fast-path` feature (on by default), compiles the in-kernel ChannelData fast
//! path (src/fastpath/channel_tc.bpf.c) to a BPF object with clang, for `include_bytes!`
//! in src/fastpath/maps.rs. Without clang and libbpf's headers the build fails and says
//! what to install, or to build with `--no-default-features` (a relay without the fast
//! path, which refuses `server.fast_path_interfaces` at start-up).
//!
//! `TURNPIKE_CLANG` names the compiler; otherwise `clang`, then `clang-19` … are tried.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/fastpath/channel_tc.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=TURNPIKE_CLANG");
    if std::env::var_os("CARGO_FEATURE_FAST_PATH").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("channel_tc.bpf.o");
    let candidates: Vec<String> = match std::env::var("TURNPIKE_CLANG") {
        Ok(clang) => vec![clang],
        Err(_) => ["clang", "clang-19", "clang-16", "clang-15", "clang-14"]
            .map(String::from)
            .to_vec(),
    };
    // Debian keeps asm/ headers under the multiarch directory, which `-target bpf`
    // does not search by itself.
    let multiarch = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default()
    );
    let mut last_error = String::from("no clang found");
    for clang in &candidates {
        let result = Command::new(clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", SOURCE, "-o"])
            .arg(&out)
            .output();
        match result {
            Ok(o) if o.status.success() => return,
            Ok(o) => {
                last_error = format!(
                    "{clang} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                // A compiler that exists but fails is a real error in the program.
                if !o.stderr.is_empty() && o.status.code().is_some() {
                    break;
                }
            }
            Err(e) => last_error = format!("{clang}: {e}"),
        }
    }
    eprintln!(
        "error: the `fast-path` feature needs clang and libbpf's headers to compile \
         {SOURCE}: {last_error}\n\
         Install them (Debian: apt-get install clang libbpf-dev) or build without the \
         in-kernel fast path: cargo build --no-default-features"
    );
    std::process::exit(1);
}
