#!/usr/bin/env bash
# Tests scripts/lambda-deploy.sh against moto's server (AWS_ENDPOINT_URL, set by test.sh):
# a role, bucket and queues made here; the deploy run twice; what it created read back
# through the Lambda API (moto creates functions and mappings; invoking needs a container,
# which lambda-check.sh stands in for with cargo lambda watch). Needs the arm64 bootstrap
# lambda-check.sh built.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${PIXQ_TOOLS_DIR:-$HOME/.cache/pixq-tools}"
export PATH="$TOOLS/awscli/bin:$TOOLS/cargo-lambda/bin:$PATH"
: "${AWS_ENDPOINT_URL:?lambda-deploy-check needs moto (scripts/test.sh starts it)}"
cli=(aws --region us-east-1 --endpoint-url "$AWS_ENDPOINT_URL")
tag="$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "lambda-deploy-check: FAILED: $*" >&2; exit 1; }

role="$("${cli[@]}" iam create-role --role-name "pixq-process-$tag" --query Role.Arn --output text \
  --assume-role-policy-document '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}')"
bucket="pixq-deploy-$tag"
"${cli[@]}" s3api create-bucket --bucket "$bucket" >/dev/null
mkq() { "${cli[@]}" sqs create-queue --queue-name "$1" --attributes "VisibilityTimeout=$2" --query QueueUrl --output text; }
jobs="$(mkq "jobs-$tag" 360)" dlq="$(mkq "jobs-dlq-$tag" 30)" heavy="$(mkq "heavy-$tag" 900)"
cat >"$work/stack.json" <<JSON
[{"OutputKey":"BucketName","OutputValue":"$bucket"},{"OutputKey":"JobsQueueUrl","OutputValue":"$jobs"},
 {"OutputKey":"JobsDlqUrl","OutputValue":"$dlq"},{"OutputKey":"HeavyQueueUrl","OutputValue":"$heavy"}]
JSON
fn="pixq-process-$tag"

# Refusals, before anything is created.
out="$(bash scripts/lambda-deploy.sh --stack-outputs "$work/stack.json" --function-name "$fn" 2>&1)" && fail "no role accepted"
grep -q -- "--role ARN is required" <<<"$out" || fail "no role: $out"; ok
out="$(bash scripts/lambda-deploy.sh --role "$role" --stack-outputs "$work/stack.json" --memory lots 2>&1)" && fail "bad memory accepted"
grep -q "whole numbers, not 'lots'" <<<"$out" || fail "bad memory: $out"; ok

deploy() {
  bash scripts/lambda-deploy.sh --role "$role" --stack-outputs "$work/stack.json" --function-name "$fn" \
    --memory "$1" --timeout 60 --batch-size "$2" --pipeline 'thumbnail:512,format:webp' >"$work/deploy.log" 2>&1 \
    || { cat "$work/deploy.log"; fail "deploy"; }
}
deploy 2048 10
"${cli[@]}" lambda get-function-configuration --function-name "$fn" >"$work/fn.json"
python3 - "$work/fn.json" "$role" "$jobs" "$bucket" "$heavy" "$dlq" <<'PY' || fail "function configuration"
import json, sys
c = json.load(open(sys.argv[1])); role, jobs, bucket, heavy, dlq = sys.argv[2:]
env = c["Environment"]["Variables"]
want = {"PIXQ_QUEUE_URL": jobs, "PIXQ_BUCKET": bucket, "PIXQ_HEAVY_QUEUE_URL": heavy, "PIXQ_DLQ_URL": dlq,
        "PIXQ_S3_EVENTS_PIPELINE": "thumbnail:512,format:webp", "PIXQ_FUNCTION_TIMEOUT": "60", "PIXQ_CONCURRENCY": "2"}
bad = {k: (env.get(k), v) for k, v in want.items() if env.get(k) != v}
assert not bad, bad
assert c["Architectures"] == ["arm64"], c["Architectures"]
assert c["Runtime"] == "provided.al2023" and c["Handler"] == "bootstrap", c
assert (c["MemorySize"], c["Timeout"], c["Role"]) == (2048, 60, role), c
PY
ok
maps() { "${cli[@]}" lambda list-event-source-mappings --function-name "$fn" >"$work/maps.json"; }
maps
python3 - "$work/maps.json" 10 <<'PY' || fail "event source mapping"
import json, sys
m = json.load(open(sys.argv[1]))["EventSourceMappings"]
assert len(m) == 1, m
m = m[0]
assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"], m
assert m["BatchSize"] == int(sys.argv[2]), m
assert m["EventSourceArn"].endswith(":jobs-" + m["EventSourceArn"].rsplit("-", 1)[1]), m
PY
ok
# Again, with new settings: the function is updated, the mapping too, and there is still one.
deploy 3008 5
"${cli[@]}" lambda get-function-configuration --function-name "$fn" --query MemorySize --output text | grep -qx 3008 || fail "memory not updated"; ok
maps
python3 - "$work/maps.json" 5 <<'PY' || fail "mapping after a second deploy"
import json, sys
m = json.load(open(sys.argv[1]))["EventSourceMappings"]
assert len(m) == 1, m
assert m[0]["BatchSize"] == int(sys.argv[2]) and m[0]["FunctionResponseTypes"] == ["ReportBatchItemFailures"], m
PY
ok
echo "lambda-deploy: $passed passed, 0 failed"
