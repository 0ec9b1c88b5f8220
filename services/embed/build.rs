//! Puts libtorch's directory on the run path of this package's binaries and tests, so they start
//! without LD_LIBRARY_PATH. (torch-sys only adds it to the link search path.)
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Ok(dir) = std::env::var("LIBTORCH") else {
        return;
    };
    let lib = std::path::Path::new(&dir).join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
