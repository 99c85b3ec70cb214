#!/usr/bin/env bash
# Requests/s of the web front end (`pixq serve`, release build, this machine), measured with
# ApacheBench (`ab`, Debian's apache2-utils) over keep-alive connections on 127.0.0.1:
#   1. an on-the-fly image cache hit (`GET /img/...`: signature, source digest, output lookup,
#      the bytes), and its 304 revalidation (If-None-Match);
#   2. `GET /api/batches/{id}` of a finished 1,000-image batch (every file's record).
# Usage: bash bench/web.sh [REQUESTS] [CONCURRENCY]. Prints requests/s and mean latency.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5000}
c=${2:-8}
command -v ab >/dev/null || { echo "bench/web.sh needs ab (apt-get install apache2-utils)" >&2; exit 2; }
cargo build -q --release -p pixq-cli
pixq="${CARGO_TARGET_DIR:-target}/release/pixq"
home=$(mktemp -d)
trap 'kill $srv 2>/dev/null; rm -rf "$home"' EXIT
"$pixq" --home "$home" serve --port 0 --workers 2 --max-files 1000 >"$home/serve.out" 2>"$home/serve.err" &
srv=$!
for _ in $(seq 1 100); do grep -q http "$home/serve.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[^ ]*' "$home/serve.out"); base=${base%/}
echo "pixq serve at $base ($(nproc) cores)"

# A finished batch of 1,000 small PNGs, made through the API.
batch=$(python3 - "$base" <<'PY'
import json, struct, sys, time, urllib.request, zlib
base = sys.argv[1]
def png(seed):
    raw = b"".join(b"\0" + bytes((x * 7 + y + seed) % 256 for x in range(64 * 3)) for y in range(64))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
imgs = [png(i) for i in range(1000)]
def call(method, url, body=None, headers={}):
    req = urllib.request.Request(base + url if url.startswith("/") else url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")
files = [{"name": f"p{i}.png", "size": len(b)} for i, b in enumerate(imgs)]
b = call("POST", "/api/batches", json.dumps({"pipeline": "grayscale", "files": files}).encode(), {"Content-Type": "application/json"})
for up, body in zip(b["uploads"], imgs):
    call("PUT", up["url"], body)
call("POST", f"/api/batches/{b['batch']}/start")
while not call("GET", f"/api/batches/{b['batch']}")["done"]:
    time.sleep(0.5)
print(b["batch"])
PY
)
mkdir -p "$home/store/pixq/images"
cp samples/chelsea.jpg "$home/store/pixq/images/"
img=$("$pixq" --home "$home" sign chelsea.jpg --ops 'thumbnail:320,format:auto')
etag=$(curl -fsS -D - -o /dev/null -H 'Accept: image/webp' "$base$img" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')

run() { # label, ab args...
  local label=$1; shift
  local out; out=$(ab -q -k "$@" 2>&1)
  local failed; failed=$(echo "$out" | awk '/^Failed requests/{print $3}')
  local non2xx; non2xx=$(echo "$out" | awk '/^Non-2xx responses/{print $3}')
  printf '%-44s %10s req/s  %8s ms mean  (failed %s, non-2xx %s)\n' "$label" \
    "$(echo "$out" | awk '/^Requests per second/{print $4}')" \
    "$(echo "$out" | awk '/^Time per request/{print $4; exit}')" "${failed:-0}" "${non2xx:-0}"
}
run "img cache hit (webp, $(curl -fsS -H 'Accept: image/webp' "$base$img" | wc -c) bytes)" -n "$n" -c "$c" -H 'Accept: image/webp' "$base$img"
run "img revalidation (304, If-None-Match)" -n "$n" -c "$c" -H 'Accept: image/webp' -H "If-None-Match: $etag" "$base$img"
run "GET /api/batches/{id}, 1,000 files" -n "$((n / 25 > 20 ? n / 25 : 20))" -c "$c" "$base/api/batches/$batch"
run "GET /healthz (the server's floor)" -n "$n" -c "$c" "$base/healthz"
