# pixq EC2 worker bootstrap: the body of the user-data that `pixq ec2 launch` sends.
# The launcher puts a block of shell assignments above this body (PIXQ_QUEUE_URL,
# PIXQ_REGION, PIXQ_WORKER_S3, PIXQ_WORKER_SHA256, PIXQ_OUTPUT_BUCKET, PIXQ_IDLE_STOP_SECS,
# PIXQ_CONCURRENCY, PIXQ_VISIBILITY_SECS). No credentials are ever in here: every AWS call,
# from `aws s3 cp` below to the worker's SQS and S3 traffic, uses the instance role (IMDSv2).
#
# What it does, on Amazon Linux 2023 (aws CLI v2, systemd):
#   1. fetches the pixq-worker binary from the stack's bucket and checks its SHA-256;
#   2. writes /etc/pixq/worker.env and a systemd unit that runs the worker as an
#      unprivileged user, restarts it if it crashes, and stops it with SIGTERM (the worker
#      finishes or releases what it holds);
#   3. when the worker stops because the queue stayed empty for PIXQ_IDLE_STOP_SECS (exit
#      code 75), powers the machine off; the launcher sets the shutdown behaviour to
#      "terminate", so an idle worker ends its own instance and costs nothing more.
# PIXQ_BOOT_ROOT (tests only) prefixes every path, so the script can run in a scratch folder.
set -euo pipefail
ROOT="${PIXQ_BOOT_ROOT:-}"
log() { echo "pixq-bootstrap: $*" >&2; }

: "${PIXQ_QUEUE_URL:?}" "${PIXQ_REGION:?}" "${PIXQ_WORKER_S3:?}" "${PIXQ_WORKER_SHA256:?}"
BIN_DIR="$ROOT/usr/local/bin"
ETC="$ROOT/etc/pixq"
UNIT_DIR="$ROOT/etc/systemd/system"
mkdir -p "$BIN_DIR" "$ETC" "$UNIT_DIR"

log "fetching $PIXQ_WORKER_S3"
for attempt in 1 2 3 4 5; do
  if aws s3 cp --only-show-errors --region "$PIXQ_REGION" "$PIXQ_WORKER_S3" "$BIN_DIR/pixq-worker.download"; then
    break
  fi
  [ "$attempt" = 5 ] && { log "could not fetch the worker binary"; exit 1; }
  sleep $((attempt * 2))
done
echo "$PIXQ_WORKER_SHA256  $BIN_DIR/pixq-worker.download" | sha256sum -c --quiet - || {
  log "the worker binary does not match its SHA-256; refusing to run it"
  exit 1
}
install -m 0755 "$BIN_DIR/pixq-worker.download" "$BIN_DIR/pixq-worker"
rm -f "$BIN_DIR/pixq-worker.download"

if ! id pixq >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /sbin/nologin pixq
fi

umask 022
cat > "$ETC/worker.env" <<EOF
PIXQ_TARGET=aws
PIXQ_QUEUE_URL=$PIXQ_QUEUE_URL
AWS_REGION=$PIXQ_REGION
PIXQ_OUTPUT_BUCKET=${PIXQ_OUTPUT_BUCKET:-}
PIXQ_LOG_FORMAT=json
PIXQ_EMF=true
PIXQ_VISIBILITY_SECS=${PIXQ_VISIBILITY_SECS:-120}
PIXQ_WAIT_SECS=20
PIXQ_IDLE_EXIT_CODE=75
EOF
if [ -n "${PIXQ_IDLE_STOP_SECS:-}" ]; then echo "PIXQ_IDLE_STOP_SECS=$PIXQ_IDLE_STOP_SECS" >> "$ETC/worker.env"; fi
if [ -n "${PIXQ_CONCURRENCY:-}" ]; then echo "PIXQ_CONCURRENCY=$PIXQ_CONCURRENCY" >> "$ETC/worker.env"; fi

cat > "$UNIT_DIR/pixq-worker.service" <<'EOF'
[Unit]
Description=pixq worker (long-polls the heavy SQS queue)
After=network-online.target
Wants=network-online.target

[Service]
User=pixq
EnvironmentFile=/etc/pixq/worker.env
ExecStart=/usr/local/bin/pixq-worker
# 75: stopped because the queue stayed empty; that is not a failure, and the machine goes.
SuccessExitStatus=75
# '+': runs with full privileges (poweroff), unlike the worker itself.
ExecStopPost=+/bin/sh -c 'if [ "$EXIT_STATUS" = 75 ]; then /usr/bin/systemctl --no-block poweroff; fi'
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=120
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
EOF

systemctl daemon-reload
systemctl enable --now pixq-worker.service
log "pixq-worker started on $PIXQ_QUEUE_URL"
