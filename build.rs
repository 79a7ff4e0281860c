//! Compiles the in-kernel ChannelData fast path (src/fastpath/channel_tc.bpf.c) to a BPF
//! object with clang, for `include_bytes!` in src/fastpath/mod.rs.
//!
//! clang is optional: without it the relay builds and runs as before, and a config
//! that asks for `server.fast_path_interfaces` is refused at start-up with the reason.
//! `TURNPIKE_CLANG` names the compiler; otherwise `clang`, then `clang-14` … are tried.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/fastpath/channel_tc.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=TURNPIKE_CLANG");
    println!("cargo::rustc-check-cfg=cfg(turnpike_bpf)");
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
            Ok(o) if o.status.success() => {
                println!("cargo::rustc-cfg=turnpike_bpf");
                return;
            }
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
    println!(
        "cargo::warning=the eBPF fast path is not built ({}); install clang and libbpf-dev to build it",
        last_error.lines().next().unwrap_or_default()
    );
}
