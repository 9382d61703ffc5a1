# calico-rs image: calico-node (the DaemonSet's main process) with its
# children confd, bird and felix, and the CNI plugin `calico` that the
# install-cni init container copies to the host.
#
#   docker build -t calico-rs:latest .
#
# Without Docker or a registry: scripts/oci-image.sh builds the same image
# (the same binaries, entrypoint and command; busybox-static instead of
# debian:bookworm-slim's userland, nft and ip with their shared libraries)
# from `cargo build --release --locked --bins` as an OCI archive for
# `ctr -n k8s.io images import` on each node. scripts/e2e-k8s.sh runs it.
#
# deploy/calico-node.yaml runs this image for both containers.

FROM rust:1-bookworm AS build
# No protoc to install: the build runs the one Cargo downloads (build/protoc).
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/calico-node target/release/confd target/release/bird \
          target/release/felix target/release/calico \
          target/release/calicoctl /out/

FROM debian:bookworm-slim
# nftables: felix's NAT-outgoing table; iproute2: `ip` for operators on
# the node; ca-certificates: TLS to the API server or etcd.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iproute2 nftables ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# calico-node starts its children from its own directory.
COPY --from=build /out/ /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/calico-node"]
CMD ["run"]
