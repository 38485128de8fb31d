//! Compiles `proto/` with the pure-Rust `protox`, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a build script
    // compiled in another checkout of the same sources may be reused here.
    let manifest = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest).join("../../proto");
    let files = [
        "lapse/v1/peer.proto",
        "lapse/v1/cluster.proto",
        "lapse/v1/issuer.proto",
        "lapse/v1/feed.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Feed payloads are shared between subscribers without copying.
        .bytes(".lapse.feed.v1.FeedEvent")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
