#!/usr/bin/env bash
# Installs the real data sets the tests and benchmarks use, from Debian's packages.
# Fashion-MNIST (MIT) lands in /usr/share/datasets/fashion-mnist. Safe to run twice.
set -euo pipefail
if [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  echo "Fashion-MNIST: present"; exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "Fashion-MNIST missing: run 'apt-get install dataset-fashion-mnist' as root" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
echo "Fashion-MNIST: installed"
