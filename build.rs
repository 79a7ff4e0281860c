//! Compiles the in-kernel ChannelData fast path (src/fastpath/channel_tc.bpf.c) to a BPF
//! object with clang, for `include_bytes!` in src/fastpath/maps.rs, and then sets the
//! `turnpike_bpf` cfg the code is built with:
//!
//! - feature `fast-path`: it must be built; without clang and libbpf's headers the
//!   build fails and says what to install;
//! - feature `fast-path-if-clang` (the default): built where clang and the headers
//!   are there, otherwise left out with a build warning (a relay without it refuses
//!   `server.fast_path_interfaces` at start-up);
//! - neither (`--no-default-features`): never built.
//!
//! `TURNPIKE_CLANG` names the compiler; otherwise `clang`, then `clang-19` … are tried.

use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "src/fastpath/channel_tc.bpf.c";

fn main() {
    println!("cargo::rerun-if-changed={SOURCE}");
    println!("cargo::rerun-if-env-changed=TURNPIKE_CLANG");
    println!("cargo::rustc-check-cfg=cfg(turnpike_bpf)");
    let required = std::env::var_os("CARGO_FEATURE_FAST_PATH").is_some();
    if !required && std::env::var_os("CARGO_FEATURE_FAST_PATH_IF_CLANG").is_none() {
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
    let reason = last_error.lines().next().unwrap_or_default().to_string();
    if !required {
        println!(
            "cargo::warning=the in-kernel fast path is not built ({reason}); install clang \
             and libbpf-dev to build it, or build with --features fast-path to require it"
        );
        return;
    }
    eprintln!(
        "error: the `fast-path` feature needs clang and libbpf's headers to compile \
         {SOURCE}: {reason}\n\
         Install them (Debian: apt-get install clang libbpf-dev), or build without \
         `--features fast-path` (the default builds the fast path only where clang is)"
    );
    std::process::exit(1);
}
