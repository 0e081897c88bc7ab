//! Builds the core as a WebAssembly component (`guest/`, target
//! `wasm32-wasip2`) so `cargo build` is the only step a newcomer needs. The
//! component's path reaches the runner as `EDGEGATE_GUEST_WASM`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("local-runner sits in the workspace root")
        .to_path_buf();
    for path in ["guest/src", "guest/Cargo.toml", "wit"] {
        println!(
            "cargo:rerun-if-changed={}",
            manifest_dir.join(path).display()
        );
    }
    for path in ["core/src", "core/Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    // Its own target dir: the outer build holds the lock on ours.
    let target_dir = PathBuf::from(env("OUT_DIR")).join("guest-target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--package",
            "edgegate-guest",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's settings are for the host target, not the guest.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_ENCODED_RUSTFLAGS")
            || key == "RUSTFLAGS"
            || key == "CARGO_TARGET_DIR"
            || key == "CARGO_BUILD_TARGET"
            || key == "CARGO_BUILD_RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "CARGO_MAKEFLAGS"
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
        {
            cmd.env_remove(key);
        }
    }
    // SIMD lets the core's byte scanners (safety screening, token estimate)
    // vectorise; wasmtime supports it on every host it runs on.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    // The guest keeps function names in traces (not `strip = true`).
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    cmd.env("CARGO_PROFILE_RELEASE_INCREMENTAL", "false");
    let status = cmd.status().expect("run cargo for the guest component");
    assert!(
        status.success(),
        "building the guest component failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
    );
    let wasm = target_dir.join("wasm32-wasip2/release/edgegate_guest.wasm");
    assert!(
        wasm.exists(),
        "guest component missing at {}",
        wasm.display()
    );
    println!("cargo:rustc-env=EDGEGATE_GUEST_WASM={}", wasm.display());
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is set by cargo"))
}
