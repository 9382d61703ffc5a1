//! The `felix` executable; everything is in [`felix::cli`], which calico-node
//! also runs as `calico-node felix ...` (one executable for the node's
//! daemons, so they share their code pages).

fn main() -> anyhow::Result<()> {
    felix::cli::main(std::env::args_os())
}
