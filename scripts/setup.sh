#!/usr/bin/env bash
# One-time machine set-up for building pixq: the C toolchain pieces libjpeg-turbo and
# libheif need (cmake, nasm, pkg-config, the HEVC and AV1 decoders libde265 and dav1d),
# curl/file/python3-venv for the test tools, and a Rust toolchain. Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v file >/dev/null 2>&1 || need+=(file)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
# AVIF and HEIC input (the CLI's `heif` feature): libheif is built from source, linked to
# these decoders.
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
for lib in libde265-dev libdav1d-dev; do
  dpkg -s "$lib" >/dev/null 2>&1 || need+=("$lib")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (Debian packages)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
