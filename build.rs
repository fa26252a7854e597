//! Compiles `proto/*.proto` with tonic. protoc comes from the vendored crate unless
//! the environment already names one (`PROTOC`), so a fresh machine needs no apt step.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .file_descriptor_set_path(out_dir.join("silo_descriptor.bin"))
        .compile_protos(&["proto/silo.proto", "proto/raft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
