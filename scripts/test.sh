#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, formatting, lints, unit/integration/
# property/chaos tests, the AWS-protocol tests against moto's server on 127.0.0.1, the
# web front end through `pixq serve` and headless Chromium, the
# Lambda binary through cargo lambda's runtime API, the arm64 build, its deployment with
# `cargo lambda deploy` (scripts/lambda-deploy.sh), and the SAM template
# through cfn-lint and `sam validate --lint`. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pixq-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# No incremental caches: a suite run rebuilds each changed crate whole anyway, and the caches
# grew the shared target dir by about 15 GB (a full disk failed a run).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
TOOLS="${PIXQ_TOOLS_DIR:-$HOME/.cache/pixq-tools}"

bash scripts/setup.sh
bash scripts/tools.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p pixq-cli --all-targets --features ec2 -- -D warnings
# The builds with fewer parts: the README's first command (no AWS SDK) and the Lambda
# functions (no embedded queue and store, so no SQLite linked in).
cargo clippy -p pixq-cli --no-default-features -- -D warnings
cargo clippy -p pixq-functions --bins -- -D warnings

# moto's server on a free loopback port; every AWS call of the tests goes there.
port=$("$TOOLS/moto/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$TOOLS/moto/bin/moto_server" -H 127.0.0.1 -p "$port" >"${TMPDIR:-/tmp}/pixq-moto-$port.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/moto-api/" >/dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
echo "== moto server on $AWS_ENDPOINT_URL"

echo "== cargo test (workspace, with \`pixq ec2\`; AWS tests against moto)"
cargo test --workspace --features pixq-cli/ec2

echo "== web front end end to end: pixq serve over HTTP, and the page in headless Chromium"
python3 scripts/web-e2e.py "$CARGO_TARGET_DIR/debug/pixq" "$CARGO_TARGET_DIR/web-e2e"

echo "== cargo test (pixq-kernel, pure-Rust JPEG fallback)"
cargo test -p pixq-kernel --no-default-features

echo "== Lambda binary through cargo lambda watch/invoke, and the arm64 build"
bash scripts/lambda-check.sh

echo "== cargo lambda deploy without SAM (scripts/lambda-deploy.sh against moto)"
bash scripts/lambda-deploy-check.sh

echo "== template.yaml: cfn-lint, sam validate --lint"
"$TOOLS/cfn-lint/bin/cfn-lint" template.yaml
# The worker group's shape (IMDSv2, encryption, no key, minimum 0, both scaling policies and
# their metric math) with cfn-lint's PyYAML.
"$TOOLS/cfn-lint/bin/python" scripts/template-check.py template.yaml
SAM_CLI_TELEMETRY=0 "$TOOLS/sam/bin/sam" validate --lint --region us-east-1
echo "template: 1 passed, 0 failed"

echo "== all tests passed"
