//! Generates the Rust code for every proto file. protoc comes from `protoc-bin-vendored` so a
//! fresh machine needs no system package.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "recalloc/v1/records.proto",
        "recalloc/v1/ingest.proto",
        "recalloc/v1/embed.proto",
        "recalloc/v1/rank.proto",
        "recalloc/v1/scheduler.proto",
        "externalscaler/externalscaler.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("recalloc_descriptor.bin"))
        .compile_protos(&protos, &["."])?;
    Ok(())
}
