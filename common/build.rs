//! Generates the gRPC contracts from `../proto` with a vendored protoc, so a machine with only
//! cargo builds the workspace. The descriptor set feeds gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "fiscalbill/type/v1/bill.proto",
    "fiscalbill/bureau/v1/bureau.proto",
    "fiscalbill/collection/v1/collection.proto",
];

/// Response messages that carry secrets: their Debug impl is hand-written and redacting.
const SECRET_MESSAGES: &[&str] =
    &[".fiscalbill.collection.v1.GetAccessTokenResponse", ".fiscalbill.collection.v1.GetCardTicketResponse"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../proto").canonicalize()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    let includes = vec![proto_root, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        .file_descriptor_set_path(out_dir.join("fiscalbill_descriptor.bin"))
        .skip_debug(SECRET_MESSAGES.iter().copied())
        // PDFs travel as `Bytes`: handed on without copying.
        .bytes(".")
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
