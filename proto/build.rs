fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shared = ["proto/calico/common.proto", "proto/calico/health.proto"];
    // Packages that import `calico.common.v1`. Each package is flattened
    // into one module of this crate (`common`, `health`, `bird`), so these
    // are compiled separately and told where the shared types live instead
    // of walking `super::` paths that do not exist.
    let importers = [
        "proto/calico/bird.proto",
        "proto/calico/bgpconfig.proto",
        "proto/calico/routes.proto",
        "proto/calico/felix.proto",
    ];
    for p in shared.iter().chain(&importers) {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&shared, &["proto"])?;
    tonic_prost_build::configure()
        .extern_path(".calico.common.v1", "crate::common")
        .compile_protos(&importers, &["proto"])?;
    Ok(())
}
