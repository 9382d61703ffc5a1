fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/calico/common.proto", "proto/calico/health.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    Ok(())
}
