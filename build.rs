//! Fails early, with one readable message, when the system OpenBLAS is missing.
//!
//! Without this check a missing library surfaces as hundreds of undefined-symbol
//! lines from the linker, long after compilation.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=OPENBLAS_LIB_DIR");
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    // docs.rs builds documentation without linking, on a machine without OpenBLAS.
    if env::var_os("CARGO_FEATURE_OPENBLAS_SYSTEM").is_none() || env::var_os("DOCS_RS").is_some() {
        return;
    }
    if let Some(dir) = openblas_dir() {
        // The library may sit outside the linker's default path (Homebrew, a Debian
        // alternatives folder, OPENBLAS_LIB_DIR): tell the linker where it was found.
        println!("cargo:rustc-link-search=native={}", dir.display());
        return;
    }
    eprintln!(
        "\nmatgrad: the system OpenBLAS library (libopenblas) was not found.\n\
         Install it, then build again:\n  \
         Debian/Ubuntu:  apt-get install libopenblas-dev\n  \
         Fedora:         dnf install openblas-devel\n  \
         Arch:           pacman -S openblas\n  \
         macOS:          brew install openblas  (and set OPENBLAS_LIB_DIR=$(brew --prefix openblas)/lib)\n\
         Or point OPENBLAS_LIB_DIR at the folder holding libopenblas, or build with the\n\
         pure-Rust backend, which needs no system library:\n  \
         cargo build --no-default-features --features faer,check\n"
    );
    std::process::exit(1);
}

fn openblas_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = env::var_os("OPENBLAS_LIB_DIR") {
        dirs.push(dir.into());
    }
    for var in ["LIBRARY_PATH", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH"] {
        if let Some(paths) = env::var_os(var) {
            dirs.extend(env::split_paths(&paths));
        }
    }
    let target = env::var("TARGET").unwrap_or_default();
    let multiarch = target.replace("-unknown-linux-gnu", "-linux-gnu");
    for dir in [
        format!("/usr/lib/{multiarch}"),
        format!("/usr/lib/{multiarch}/openblas-pthread"),
        format!("/usr/lib/{multiarch}/openblas-openmp"),
        "/usr/lib".into(),
        "/usr/lib64".into(),
        "/usr/local/lib".into(),
        "/opt/homebrew/opt/openblas/lib".into(),
        "/usr/local/opt/openblas/lib".into(),
    ] {
        dirs.push(dir.into());
    }
    let names = [
        "libopenblas.so",
        "libopenblas.a",
        "libopenblas.dylib",
        "openblas.lib",
    ];
    dirs.into_iter()
        .find(|d| names.iter().any(|n| Path::new(d).join(n).exists()))
}
