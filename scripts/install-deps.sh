#!/usr/bin/env bash
# Installs what building and testing Havoc needs on Debian/Ubuntu, as root:
# clang + libbpf headers (eBPF programs are C compiled by build.rs), iproute2/iptables/nftables
# (network faults and their tests), protoc (the agent's gRPC API), containerd + runc + busybox-static
# (the agent's tests run real containers from a locally built image), Chromium and node (the
# dashboard's browser tests), and the small tools the tests use.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  clang llvm libbpf-dev bpftool gcc-multilib libelf-dev zlib1g-dev pkg-config \
  iproute2 iptables nftables iputils-ping ethtool procps psmisc ca-certificates \
  protobuf-compiler containerd runc busybox-static containernetworking-plugins \
  dnsmasq-base bind9-dnsutils curl wrk nghttp2-client python3 chromium >/dev/null
# The dashboard's browser tests run Playwright (npm) on node; any node >= 18 will do.
command -v node >/dev/null || apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
