//! Builds every guest component (example plugins and hostile fixtures) from
//! source, so that `cargo test` works from a clean checkout.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["plugins", "tests/fixtures", "sdk", "wit", "scripts"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let output = Command::new(root.join("scripts/build-plugins.sh"))
        .output()
        .expect("running scripts/build-plugins.sh");
    if !output.status.success() {
        panic!(
            "building the guest components failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = String::from_utf8(output.stdout).expect("utf-8 path");
    println!("cargo:rustc-env=SESSIOND_PLUGIN_DIR={}", dir.trim());
}
