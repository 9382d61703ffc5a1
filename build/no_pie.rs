//! The build script of every crate with a daemon or the CNI plugin in it
//! (`build = "../build/no_pie.rs"` in their Cargo.toml): links their
//! executables position-dependent. A position-independent one makes the
//! loader apply tens of thousands of relocations at every start, reading
//! the relocation table and dirtying the pointer tables it patches, about
//! 1 MB per process (BENCHMARKS.md, scale). The trade-off is in the
//! README's threat model.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
