//! The `bird` executable; everything is in [`bird::cli`], which calico-node
//! also runs as `calico-node bird ...` (one executable for the node's
//! daemons, so they share their code pages).

fn main() -> anyhow::Result<()> {
    bird::cli::main(std::env::args_os())
}
