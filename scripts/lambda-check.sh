#!/usr/bin/env bash
# The Lambda binary driven through a runtime API: `cargo lambda watch` serves pixq-process
# on 127.0.0.1, `cargo lambda invoke` sends it an SQS event whose records were set up on the
# moto server (AWS_ENDPOINT_URL); then the arm64 release build. Needs scripts/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${PIXQ_TOOLS_DIR:-$HOME/.cache/pixq-tools}"
export PATH="$TOOLS/cargo-lambda/bin:$PATH"
: "${AWS_ENDPOINT_URL:?start moto first (scripts/test.sh does)}"
case "$AWS_ENDPOINT_URL" in http://127.0.0.1:*) ;; *) echo "refusing a non-loopback endpoint" >&2; exit 1 ;; esac
work=$(mktemp -d)
port=$("$TOOLS/moto/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# Bucket, queue + DLQ, one good image and one broken one, and the SQS event carrying them.
"$TOOLS/moto/bin/python" - "$work" <<'PY'
import boto3, json, os, sys, io, struct, zlib, uuid
work = sys.argv[1]
ep = os.environ["AWS_ENDPOINT_URL"]
s3 = boto3.client("s3", endpoint_url=ep, region_name=os.environ.get("AWS_REGION", "us-east-1"))
sqs = boto3.client("sqs", endpoint_url=ep, region_name=os.environ.get("AWS_REGION", "us-east-1"))
tag = uuid.uuid4().hex[:8]
bucket = f"lambda-check-{tag}"
s3.create_bucket(Bucket=bucket)
dlq = sqs.create_queue(QueueName=f"lc-dlq-{tag}")["QueueUrl"]
arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
q = sqs.create_queue(QueueName=f"lc-jobs-{tag}", Attributes={"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"})})["QueueUrl"]
def png(w, h):
    raw = b"".join(b"\0" + bytes((x * 7 + y) % 256 for x in range(w * 3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
s3.put_object(Bucket=bucket, Key="inputs/lc/good.png", Body=png(120, 80))
s3.put_object(Bucket=bucket, Key="inputs/lc/bad.png", Body=b"not a png at all")
def job(i, key):
    return {"schema": 1, "id": f"lc-{i}", "batch": "lc", "input": {"bucket": bucket, "key": key},
            "pipeline": {"ops": [{"op": "thumbnail", "size": 60}], "output": {"format": "png"}},
            "output": {"bucket": bucket, "prefix": "outputs/"}, "submitted_at_ms": 0}
for i, key in enumerate(["inputs/lc/good.png", "inputs/lc/bad.png"]):
    sqs.send_message(QueueUrl=q, MessageBody=json.dumps(job(i, key)))
# Held as Lambda's poller holds them (it deletes what the function did not report failed;
# `cargo lambda invoke` does not): 12 hours, so they stay out of later receives however long
# a cold machine takes over the steps below.
msgs = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, VisibilityTimeout=43200, AttributeNames=["All"])["Messages"]
records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"} for m in msgs]
json.dump({"Records": records}, open(f"{work}/event.json", "w"))
with open(f"{work}/env", "w") as f:
    f.write(f"PIXQ_QUEUE_URL={q}\nPIXQ_DLQ_URL={dlq}\nPIXQ_BUCKET={bucket}\nAWS_LAMBDA_FUNCTION_TIMEOUT=60\n")
    f.write("PIXQ_SIGNING_KEY=lambda-check-signing-key\n")
    f.write("PIXQ_API_KEY=lambda-check-api-key\n")
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        f.write(f"{k}={os.environ[k]}\n")
open(f"{work}/bucket", "w").write(bucket)
open(f"{work}/dlq", "w").write(dlq)
PY

# Build first, so the invocation's deadline is not spent compiling.
cargo build -q -p pixq-functions --bin pixq-process --bin pixq-api
cargo lambda watch --timeout 120 -A 127.0.0.1 -P "$port" --env-file "$work/env" -p pixq-functions >"$work/watch.log" 2>&1 &
watch_pid=$!
trap 'kill $watch_pid 2>/dev/null; wait $watch_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then break; fi
  sleep 0.5
done
out=$(cargo lambda invoke pixq-process --data-file "$work/event.json" -A 127.0.0.1 -P "$port")
echo "lambda-check: response $out"
echo "$out" | grep -q '"batchItemFailures":\[\]' || { echo "lambda-check: expected no failed items"; cat "$work/watch.log"; exit 1; }
"$TOOLS/moto/bin/python" - "$work" <<'PY'
import boto3, json, os, sys
work = sys.argv[1]
ep = os.environ["AWS_ENDPOINT_URL"]
bucket = open(f"{work}/bucket").read()
s3 = boto3.client("s3", endpoint_url=ep, region_name=os.environ.get("AWS_REGION", "us-east-1"))
keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
good = json.loads(s3.get_object(Bucket=bucket, Key="results/lc/lc-0.json")["Body"].read())
bad = json.loads(s3.get_object(Bucket=bucket, Key="results/lc/lc-1.json")["Body"].read())
assert good["status"] == "ok" and good["outputs"][0]["width"] == 60, good
assert bad["status"] == "failed" and "not a supported image" in bad["reason"], bad
dlq = open(f"{work}/dlq").read()
sqs = boto3.client("sqs", endpoint_url=ep, region_name=os.environ.get("AWS_REGION", "us-east-1"))
dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])
assert len(dead) == 1 and "not a supported image" in dead[0]["MessageAttributes"]["pixq-reason"]["StringValue"], dead
print("lambda-check: 1 passed, 0 failed: good record processed, poison record dead-lettered with its reason")
PY

# The web API function: HTTP API (payload 2.0) events through the same runtime API. Create a
# batch; the answer carries a presigned S3 PUT that works with a plain HTTP PUT against
# moto; start it; the function answers the batch's status.
"$TOOLS/moto/bin/python" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def event(method, path, body=None):
    e = {"version": "2.0", "routeKey": "ANY /{proxy+}", "rawPath": path, "rawQueryString": "",
         "headers": {"host": "api.example.invalid", "content-type": "application/json", "accept": "application/json",
                     "authorization": "Bearer lambda-check-api-key"},
         "requestContext": {"accountId": "123456789012", "apiId": "api", "domainName": "api.example.invalid",
                            "domainPrefix": "api", "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                            "sourceIp": "127.0.0.1", "userAgent": "lambda-check"}, "requestId": "r1",
                            "routeKey": "ANY /{proxy+}", "stage": "$default", "time": "02/Dec/2026:00:00:00 +0000",
                            "timeEpoch": 0}, "isBase64Encoded": False}
    if body is not None:
        e["body"] = json.dumps(body)
    return e
json.dump(event("GET", "/api/ops"), open(f"{work}/ops.json", "w"))
PY
out=$(cargo lambda invoke pixq-api --data-file "$work/ops.json" -A 127.0.0.1 -P "$port")
echo "$out" | grep -q '"statusCode":200' && echo "$out" | grep -q 'thumbnail' || { echo "lambda-check: pixq-api GET /api/ops: $out"; cat "$work/watch.log"; exit 1; }
"$TOOLS/moto/bin/python" - "$work" <<'PY'
import json, struct, sys, zlib
work = sys.argv[1]
def png(w, h):
    raw = b"".join(b"\0" + bytes((x * 7 + y) % 256 for x in range(w * 3)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
body = png(90, 60)
open(f"{work}/upload.png", "wb").write(body)
ev = json.load(open(f"{work}/ops.json"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = "/api/batches"
ev["requestContext"]["http"]["method"] = "POST"
ev["body"] = json.dumps({"pipeline": "thumbnail:30,format:png", "files": [{"name": "a.png", "size": len(body), "type": "image/png"}]})
json.dump(ev, open(f"{work}/create.json", "w"))
PY
out=$(cargo lambda invoke pixq-api --data-file "$work/create.json" -A 127.0.0.1 -P "$port")
"$TOOLS/moto/bin/python" - "$work" "$out" <<'PY'
import json, sys, urllib.request
work, out = sys.argv[1], json.loads(sys.argv[2])
assert out["statusCode"] == 201, out
created = json.loads(out["body"])
up = created["uploads"][0]
assert up["url"].startswith("http://127.0.0.1:") and "X-Amz-Signature" in up["url"], up
data = open(f"{work}/upload.png", "rb").read()
# The headers the API hands out, as the page sends them: the type is signed, and bytes.
assert {k.lower(): v for k, v in up["headers"].items()}.get("content-type") == "application/octet-stream", up
req = urllib.request.Request(up["url"], data=data, method="PUT", headers=up["headers"])
assert urllib.request.urlopen(req, timeout=30).status == 200
# The size and the type are part of the signature, so S3 refuses any other (moto does not
# check presigned signatures, so this checks what is signed).
signed = up["url"].split("X-Amz-SignedHeaders=")[1].split("&")[0]
assert "content-length" in signed and "content-type" in signed, up["url"]
ev = json.load(open(f"{work}/create.json"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = f"/api/batches/{created['batch']}/start"
ev.pop("body")
json.dump(ev, open(f"{work}/start.json", "w"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = f"/api/batches/{created['batch']}"
ev["requestContext"]["http"]["method"] = "GET"
json.dump(ev, open(f"{work}/status.json", "w"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = f"/api/batches/{created['batch']}/files/0/input"
json.dump(ev, open(f"{work}/input.json", "w"))
PY
out=$(cargo lambda invoke pixq-api --data-file "$work/start.json" -A 127.0.0.1 -P "$port")
echo "$out" | grep -q '"statusCode":202' && echo "$out" | grep -q 'jobs\\":1' || { echo "lambda-check: pixq-api start: $out"; exit 1; }
out=$(cargo lambda invoke pixq-api --data-file "$work/status.json" -A 127.0.0.1 -P "$port")
echo "$out" | grep -q '"statusCode":200' && echo "$out" | grep -q 'queued' || { echo "lambda-check: pixq-api status: $out"; exit 1; }
out=$(cargo lambda invoke pixq-api --data-file "$work/input.json" -A 127.0.0.1 -P "$port")
"$TOOLS/moto/bin/python" - "$work" "$out" <<'PY'
import json, sys, urllib.request
work, out = sys.argv[1], json.loads(sys.argv[2])
assert out["statusCode"] == 302, out
location = out["headers"]["location"]
assert location.startswith("http://127.0.0.1:") and "X-Amz-Signature" in location, location
got = urllib.request.urlopen(location, timeout=30).read()
assert got == open(f"{work}/upload.png", "rb").read(), "the presigned GET returns the uploaded bytes"
PY
# The job the API enqueued, through pixq-process; then the API's events (one status per
# connection behind a buffering function, with a reconnect hint) and the batch's ZIP (written
# to the bucket, answered with a presigned GET that a plain HTTP client follows).
"$TOOLS/moto/bin/python" - "$work" <<'PY'
import boto3, json, os, sys
work = sys.argv[1]
ep = os.environ["AWS_ENDPOINT_URL"]
env = dict(l.split("=", 1) for l in open(f"{work}/env").read().splitlines())
sqs = boto3.client("sqs", endpoint_url=ep, region_name=os.environ.get("AWS_REGION", "us-east-1"))
ev = json.load(open(f"{work}/status.json"))
batch = ev["rawPath"].rsplit("/", 1)[1]
# The API's batch only: whatever else the queue holds is not this step's.
msgs = sqs.receive_message(QueueUrl=env["PIXQ_QUEUE_URL"], MaxNumberOfMessages=10, VisibilityTimeout=43200, AttributeNames=["All"], WaitTimeSeconds=5)["Messages"]
msgs = [m for m in msgs if json.loads(m["Body"]).get("batch") == batch]
assert len(msgs) == 1, msgs
records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m["Attributes"], "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs", "awsRegion": "us-east-1"} for m in msgs]
json.dump({"Records": records}, open(f"{work}/api-job.json", "w"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = f"/api/batches/{batch}/events"
json.dump(ev, open(f"{work}/events.json", "w"))
ev["rawPath"] = ev["requestContext"]["http"]["path"] = f"/api/batches/{batch}/zip"
json.dump(ev, open(f"{work}/zip.json", "w"))
PY
out=$(cargo lambda invoke pixq-process --data-file "$work/api-job.json" -A 127.0.0.1 -P "$port")
echo "$out" | grep -q '"batchItemFailures":\[\]' || { echo "lambda-check: pixq-process on the API's job: $out"; cat "$work/watch.log"; exit 1; }
out=$(cargo lambda invoke pixq-api --data-file "$work/events.json" -A 127.0.0.1 -P "$port")
echo "$out" | grep -q '"statusCode":200' && echo "$out" | grep -q 'event: done' && echo "$out" | grep -q '\\"ok\\":1' || { echo "lambda-check: pixq-api events: $out"; exit 1; }
out=$(cargo lambda invoke pixq-api --data-file "$work/zip.json" -A 127.0.0.1 -P "$port")
"$TOOLS/moto/bin/python" - "$work" "$out" <<'PY'
import io, json, struct, sys, urllib.request, zipfile
work, out = sys.argv[1], json.loads(sys.argv[2])
assert out["statusCode"] == 302, out
location = out["headers"]["location"]
assert location.startswith("http://127.0.0.1:") and "X-Amz-Signature" in location and "/zips/" in location, location
z = zipfile.ZipFile(io.BytesIO(urllib.request.urlopen(location, timeout=30).read()))
assert z.testzip() is None
names = z.namelist()
assert names == ["0000-a.png"], names
png = z.read(names[0])
assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (30, 20), png[:24]
PY
echo "lambda-check: pixq-api: ops, create (a presigned PUT of the signed size, used with plain HTTP), start, status, redirect to a presigned GET of the upload; the job through pixq-process; events; the ZIP written to the bucket behind a presigned GET"

# Cold starts under cargo lambda watch (debug build, this machine): the functions' own
# initialisation (configuration, SDK clients, the router), as each logged it.
grep -o '"init_ms":[0-9.]*' "$work/watch.log" | sed 's/^/lambda-check: cold start /' || echo "lambda-check: no init_ms logged"

echo "lambda-check: cargo lambda build --release --arm64"
cargo lambda build --release --arm64 -p pixq-functions --bin pixq-process >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
boot="$CARGO_TARGET_DIR/lambda/pixq-process/bootstrap"
[ -f "$boot" ] || { echo "lambda-check: no bootstrap at $boot"; exit 1; }
file "$boot" 2>/dev/null | grep -q aarch64 || { echo "lambda-check: bootstrap is not arm64"; exit 1; }
echo "lambda-check: arm64 bootstrap $(du -k "$boot" | cut -f1) KiB"
