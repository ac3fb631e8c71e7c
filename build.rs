//! Compiles `proto/` with the vendored `protoc` (no system package needed) and
//! writes the file descriptor set that the reflection service serves (the
//! API and the event schema, `events.proto`, so consumers can fetch it too).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps as BTreeMap: encoded in key order, so an event is the same bytes
    // whoever encodes it (the SQL functions encode `Redeemed.attributes` too).
    config.btree_map(["."]);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("invitations_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                PathBuf::from("proto/invitations/v1/invitations.proto"),
                PathBuf::from("proto/invitations/v1/events.proto"),
                PathBuf::from("proto/invitations/v1/waitlist.proto"),
                PathBuf::from("proto/invitations/v1/lifecycle.proto"),
                PathBuf::from("proto/invitations/v1/conversions.proto"),
                PathBuf::from("proto/invitations/v1/privacy.proto"),
            ],
            &[PathBuf::from("proto"), well_known],
        )?;
    Ok(())
}
