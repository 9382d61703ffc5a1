//! Links the executables position-dependent (see "Memory" in BENCHMARKS.md):
//! a position-independent one makes the loader apply tens of thousands of
//! relocations at every start, reading the relocation table and dirtying
//! the pointer tables they patch in every process, about 1 MB per daemon.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
