#!/usr/bin/env bash
# Python-packaged tools the AWS-protocol tests need, each in its own venv (their pins clash),
# kept outside the clone so CI reuses them: moto's server, cfn-lint, aws-sam-cli,
# cargo-lambda (with zig), the AWS CLI (scripts/lambda-deploy.sh). Prints nothing on a warm machine.
set -euo pipefail
TOOLS="${PIXQ_TOOLS_DIR:-$HOME/.cache/pixq-tools}"
mkdir -p "$TOOLS"
venv() { # name, pip spec, probe binary
  local dir="$TOOLS/$1"
  if [ ! -x "$dir/bin/$3" ]; then
    echo "tools: installing $2 into $dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$2"
  fi
}
venv moto 'moto[server]' moto_server
venv cfn-lint cfn-lint cfn-lint
venv sam aws-sam-cli sam
venv cargo-lambda cargo-lambda cargo-lambda
venv awscli awscli aws
if ! rustup target list --installed 2>/dev/null | grep -q aarch64-unknown-linux-gnu; then
  echo "tools: adding the aarch64-unknown-linux-gnu target"
  rustup target add aarch64-unknown-linux-gnu
fi
# libvips' command line: the reference the colour-management test compares with.
if ! command -v vips >/dev/null 2>&1; then
  echo "tools: installing libvips-tools (Debian package)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libvips-tools >/dev/null
fi
# Headless Chromium and its WebDriver for the browser test of the web page (Debian packages;
# nothing is downloaded at test time).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "tools: installing chromium and chromium-driver (Debian packages)"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi
