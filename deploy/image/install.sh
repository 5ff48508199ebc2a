#!/usr/bin/env bash
# Installs a Cove node on Debian 12 (run by packer as root; see cove-node.pkr.hcl). Everything a node needs is
# in the image, so a node's first boot only configures and starts (deploy/image/bootstrap).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# The same runtime packages as ./cove (sandbox runtime, template builds, native helpers), plus what a cloud node
# needs: awscli (credentials, secrets), apache2-utils (htpasswd for the registry), docker-registry (edges), haproxy (the
# edge's traffic port).
apt-get update -qq
apt-get install -y -qq --no-install-recommends crun tini mmdebstrap nftables iproute2 e2fsprogs uidmap util-linux mount \
  procps psmisc docker-registry ca-certificates curl python3 make gcc g++ libc6-dev git xz-utils awscli apache2-utils haproxy
# Debian starts docker-registry's own service on :5000, Cove's registry port: Cove runs its own (cove-registry).
systemctl disable --now docker-registry >/dev/null 2>&1 || true
# Debian starts its own haproxy service too: the edge runs its own HAProxy.
systemctl disable --now haproxy >/dev/null 2>&1 || true

# Node.js 20 from nodejs.org, refused unless its SHA-256 is the one pinned at build time.
tarball="node-v${NODE_VERSION}-linux-x64.tar.xz"
curl -fsSLo "/tmp/${tarball}" "https://nodejs.org/dist/v${NODE_VERSION}/${tarball}"
echo "${NODE_SHA256}  /tmp/${tarball}" | sha256sum -c -
tar -xJf "/tmp/${tarball}" -C /usr/local --strip-components=1
ln -sf /usr/local/bin/node /usr/bin/node
rm -f "/tmp/${tarball}"

# Cove itself, built as ./cove builds it.
rm -rf /opt/cove
mkdir -p /opt/cove
tar -xzf /tmp/cove.tar.gz -C /opt/cove
cd /opt/cove
npm ci --no-audit --no-fund --loglevel=error
npx tsc -b packages/*/tsconfig.json
npm run --silent bundle -w @cove/envd
npm run --silent bundle -w @cove/code-interpreter
npm run --silent build:native -w @cove/orchestrator
# CRIU 4.1 (pause/resume with memory), as ./cove installs it.
bash packages/orchestrator/scripts/install-criu.sh

install -m 0644 /tmp/cove-files/cove-orchestrator.service /tmp/cove-files/cove-edge.service /tmp/cove-files/cove-registry.service /etc/systemd/system/
install -d -m 0700 /etc/cove /var/lib/cove-node /var/lib/cove-edge
chmod 0755 deploy/image/bootstrap/*.mjs
systemctl daemon-reload
rm -rf /tmp/cove.tar.gz /tmp/cove-files
