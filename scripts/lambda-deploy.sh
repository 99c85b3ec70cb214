#!/usr/bin/env bash
# Deploys the pixq-process function without SAM: `cargo lambda deploy` into resources that
# already exist (a role, the bucket, the jobs queue and its DLQ, optionally the heavy queue),
# then the function's SQS event source mapping with ReportBatchItemFailures. Re-running it
# updates the code and the settings and keeps one mapping.
#
#   scripts/lambda-deploy.sh --role ARN --stack-outputs FILE [options]
#   scripts/lambda-deploy.sh --role ARN --bucket B --queue-url URL [--dlq-url URL] [--heavy-queue-url URL] [options]
#
# Options: --function-name NAME (pixq-process), --memory MB (2048), --timeout S (60),
# --batch-size N (10), --max-concurrency N (20), --pipeline P (S3 drop-ins: thumbnail:1024),
# --build (cargo lambda build --release --arm64 first; otherwise target/lambda/pixq-process
# must hold a bootstrap), --region R (else AWS_REGION). AWS_ENDPOINT_URL, when set, is
# passed on as the endpoint (the tests' local server).
#
# Needs: cargo lambda, the AWS CLI v2, python3. The role needs what template.yaml's
# ProcessorRole grants (logs, consume the jobs queue, send to its DLQ and the heavy queue,
# read inputs/uploads/images, write outputs/results).
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "lambda-deploy: $*" >&2; exit 2; }

name=pixq-process memory=2048 timeout=60 batch=10 concurrency=20 pipeline=thumbnail:1024 build=0
role='' outputs='' bucket='' queue='' dlq='' heavy='' region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
while [ $# -gt 0 ]; do
  case "$1" in
    --role) role="$2"; shift 2 ;;
    --stack-outputs) outputs="$2"; shift 2 ;;
    --bucket) bucket="$2"; shift 2 ;;
    --queue-url) queue="$2"; shift 2 ;;
    --dlq-url) dlq="$2"; shift 2 ;;
    --heavy-queue-url) heavy="$2"; shift 2 ;;
    --function-name) name="$2"; shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --max-concurrency) concurrency="$2"; shift 2 ;;
    --pipeline) pipeline="$2"; shift 2 ;;
    --region) region="$2"; shift 2 ;;
    --build) build=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

if [ -n "$outputs" ]; then
  [ -r "$outputs" ] || die "cannot read the stack outputs $outputs"
  # `sam list stack-outputs --output json` or `aws cloudformation describe-stacks`.
  read_output() {
    python3 - "$outputs" "$1" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
if isinstance(v, dict):
    v = v.get("Stacks", [{}])[0].get("Outputs", v.get("Outputs", []))
print(next((o["OutputValue"] for o in v if o.get("OutputKey") == sys.argv[2]), ""))
EOF
  }
  bucket="${bucket:-$(read_output BucketName)}"
  queue="${queue:-$(read_output JobsQueueUrl)}"
  dlq="${dlq:-$(read_output JobsDlqUrl)}"
  heavy="${heavy:-$(read_output HeavyQueueUrl)}"
fi
[ -n "$role" ] || die "--role ARN is required (the function's execution role)"
[ -n "$bucket" ] || die "no bucket: pass --stack-outputs FILE or --bucket"
[ -n "$queue" ] || die "no jobs queue: pass --stack-outputs FILE or --queue-url"
[ -n "$region" ] || die "no region: pass --region or set AWS_REGION"
for n in "$memory" "$timeout" "$batch" "$concurrency"; do
  case "$n" in ''|*[!0-9]*) die "--memory, --timeout, --batch-size and --max-concurrency take whole numbers, not '$n'" ;; esac
done
for v in "$role" "$bucket" "$queue" "$dlq" "$heavy" "$pipeline" "$name"; do
  case "$v" in *[[:cntrl:]]*) die "a setting holds a control character" ;; esac
done

endpoint=() cli=(aws --region "$region")
if [ -n "${AWS_ENDPOINT_URL:-}" ]; then
  endpoint=(--endpoint-url "$AWS_ENDPOINT_URL")
  cli+=(--endpoint-url "$AWS_ENDPOINT_URL")
fi

if [ "$build" = 1 ]; then
  cargo lambda build --release --arm64 -p pixq-functions --bin pixq-process
fi

# The function's environment, as template.yaml sets it (a file: values hold commas).
envfile="$(mktemp)"
trap 'rm -f "$envfile"' EXIT
{
  echo "PIXQ_QUEUE_URL=$queue"
  echo "PIXQ_BUCKET=$bucket"
  echo "PIXQ_OUTPUT_PREFIX=outputs/"
  echo "PIXQ_S3_EVENTS_PIPELINE=$pipeline"
  echo "PIXQ_CONCURRENCY=2"
  echo "PIXQ_FUNCTION_TIMEOUT=$timeout"
  if [ -n "$dlq" ]; then echo "PIXQ_DLQ_URL=$dlq"; fi
  if [ -n "$heavy" ]; then echo "PIXQ_HEAVY_QUEUE_URL=$heavy"; fi
} >"$envfile"

echo "lambda-deploy: cargo lambda deploy $name ($memory MB, $timeout s)"
cargo lambda deploy "$name" --binary-name pixq-process --manifest-path functions/Cargo.toml \
  --region "$region" "${endpoint[@]}" --role "$role" --memory "$memory" --timeout "$timeout" \
  --env-file "$envfile" --output-format json

queue_arn="$("${cli[@]}" sqs get-queue-attributes --queue-url "$queue" --attribute-names QueueArn VisibilityTimeout \
  --query Attributes.QueueArn --output text)"
visibility="$("${cli[@]}" sqs get-queue-attributes --queue-url "$queue" --attribute-names VisibilityTimeout \
  --query Attributes.VisibilityTimeout --output text)"
if [ "$visibility" -lt $((timeout * 6)) ]; then
  echo "lambda-deploy: warning: the queue's visibility timeout is ${visibility} s; AWS advises 6 x the function's timeout ($((timeout * 6)) s)" >&2
fi

existing="$("${cli[@]}" lambda list-event-source-mappings --function-name "$name" --event-source-arn "$queue_arn" \
  --query 'EventSourceMappings[0].UUID' --output text)"
if [ -n "$existing" ] && [ "$existing" != None ]; then
  echo "lambda-deploy: updating the event source mapping $existing"
  "${cli[@]}" lambda update-event-source-mapping --uuid "$existing" --batch-size "$batch" \
    --maximum-batching-window-in-seconds 1 --function-response-types ReportBatchItemFailures \
    --scaling-config "MaximumConcurrency=$concurrency" --enabled >/dev/null
else
  echo "lambda-deploy: creating the event source mapping from $queue_arn"
  "${cli[@]}" lambda create-event-source-mapping --function-name "$name" --event-source-arn "$queue_arn" \
    --batch-size "$batch" --maximum-batching-window-in-seconds 1 --function-response-types ReportBatchItemFailures \
    --scaling-config "MaximumConcurrency=$concurrency" --enabled >/dev/null
fi
echo "lambda-deploy: $name consumes $queue (batches of $batch, partial batch failures reported)"
