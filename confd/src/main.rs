//! The `confd` executable; everything is in [`confd::cli`], which calico-node
//! also runs as `calico-node confd ...` (one executable for the node's
//! daemons, so they share their code pages).

fn main() -> anyhow::Result<()> {
    confd::cli::main(std::env::args_os())
}
