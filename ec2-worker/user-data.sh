# pixq EC2 worker bootstrap: the body of the user-data that `pixq ec2 launch` sends.
# The launcher puts a block of shell assignments above this body (PIXQ_QUEUE_URL,
# PIXQ_REGION, PIXQ_WORKER_S3, PIXQ_WORKER_SHA256, PIXQ_BUCKET, PIXQ_IDLE_STOP_SECS,
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
#      "terminate", so an idle worker ends its own instance and costs nothing more;
#   4. when the worker cannot start at all (wrong queue URL, AccessDenied: it fails again
#      at every restart), powers the machine off too, after a few tries, rather than
#      restarting it for ever on an instance that is paid for and does nothing;
#   5. in the stack's Auto Scaling group (PIXQ_ASG_NAME, set by the template's loader):
#      installs the lifecycle watcher, which stops the worker with SIGTERM when the group
#      terminates the instance (IMDS target-lifecycle-state) and then completes the
#      pixq-drain lifecycle action; and an idle stop leaves the group with its desired
#      capacity decremented (a powered-off member would be replaced), or, at the group's
#      minimum, starts the worker again.
# PIXQ_BOOT_ROOT (tests only) prefixes every path, so the script can run in a scratch folder.
set -euo pipefail
ROOT="${PIXQ_BOOT_ROOT:-}"
log() { echo "pixq-bootstrap: $*" >&2; }
# A bootstrap that cannot finish (a refused setting, a binary that fails its check, S3 out
# of reach) leaves a machine that would never work: power it off (its shutdown behaviour is
# terminate) instead of paying for it. The reason is in the console output.
on_exit() {
  rc=$?
  if [ "$rc" -ne 0 ]; then
    log "bootstrap failed (exit $rc): powering off"
    systemctl --no-block poweroff || true
  fi
}
trap on_exit EXIT

: "${PIXQ_QUEUE_URL:?}" "${PIXQ_REGION:?}" "${PIXQ_WORKER_S3:?}" "${PIXQ_WORKER_SHA256:?}"
# Every setting ends up as one line of worker.env: a newline or carriage return in a value
# would start a line of its own (a variable of the sender's choosing), and no quoting carries
# control characters through an EnvironmentFile. The launcher refuses them already; this
# holds for user-data written by hand or by something else. Checked before anything is
# fetched or written, so a refused instance leaves no half-configured worker behind.
for name in PIXQ_QUEUE_URL PIXQ_REGION PIXQ_WORKER_S3 PIXQ_WORKER_SHA256 PIXQ_BUCKET \
  PIXQ_IDLE_STOP_SECS PIXQ_CONCURRENCY PIXQ_VISIBILITY_SECS PIXQ_ASG_NAME; do
  case "${!name:-}" in
    *[[:cntrl:]]*)
      log "$name contains a newline, carriage return or other control character; refusing to configure the worker with it"
      exit 1
      ;;
  esac
done
BIN_DIR="$ROOT/usr/local/bin"
LIB_DIR="$ROOT/usr/local/lib/pixq"
ETC="$ROOT/etc/pixq"
UNIT_DIR="$ROOT/etc/systemd/system"
mkdir -p "$BIN_DIR" "$LIB_DIR" "$ETC" "$UNIT_DIR"

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

# systemd reads this file itself (EnvironmentFile=), not a shell. Each value is written in
# its double-quoted form (systemd.exec(5)): inside the quotes, backslash, double quote,
# dollar and backquote are escaped with a backslash and everything else is literal, so a
# value holding a quote cannot end its line's value early and take the rest of the line
# for something else. The same four escapes are those of a POSIX shell's double quotes,
# so `set -a; . /etc/pixq/worker.env` when debugging reads the same values, and runs none.
env_line() {
  local bs='\' dq='"' bq='`' dollar='$' v="$2"
  v="${v//"$bs"/"$bs$bs"}"
  v="${v//"$dq"/"$bs$dq"}"
  v="${v//"$dollar"/"$bs$dollar"}"
  v="${v//"$bq"/"$bs$bq"}"
  printf '%s="%s"\n' "$1" "$v"
}
umask 022
{
  env_line PIXQ_TARGET aws
  env_line PIXQ_QUEUE_URL "$PIXQ_QUEUE_URL"
  env_line AWS_REGION "$PIXQ_REGION"
  env_line PIXQ_BUCKET "${PIXQ_BUCKET:-}"
  env_line PIXQ_LOG_FORMAT json
  env_line PIXQ_EMF true
  env_line PIXQ_VISIBILITY_SECS "${PIXQ_VISIBILITY_SECS:-120}"
  env_line PIXQ_WAIT_SECS 20
  env_line PIXQ_IDLE_EXIT_CODE 75
  # /healthz and Prometheus /metrics, on this host only (curl 127.0.0.1:9464/metrics).
  env_line PIXQ_METRICS_ADDR 127.0.0.1:9464
  if [ -n "${PIXQ_IDLE_STOP_SECS:-}" ]; then env_line PIXQ_IDLE_STOP_SECS "$PIXQ_IDLE_STOP_SECS"; fi
  if [ -n "${PIXQ_CONCURRENCY:-}" ]; then env_line PIXQ_CONCURRENCY "$PIXQ_CONCURRENCY"; fi
  # Read by the helpers below (the worker ignores it).
  env_line PIXQ_ASG_NAME "${PIXQ_ASG_NAME:-}"
} > "$ETC/worker.env"

# IMDSv2 (a token first; the hop limit of 1 keeps it on this host). PIXQ_IMDS_URL: tests.
cat > "$LIB_DIR/imds" <<'EOF'
#!/bin/bash
# Prints an instance metadata value: imds PATH (e.g. instance-id).
base="${PIXQ_IMDS_URL:-http://169.254.169.254}"
token="$(curl -fsS -m 2 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$base/latest/api/token")" || exit 1
exec curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$base/latest/meta-data/$1"
EOF

# After an idle stop (exit 75): a lone instance powers off (its shutdown behaviour is
# terminate); a group member asks the group to terminate it and lower the desired capacity,
# so it is not replaced, and at the group's minimum (the call is refused) works on.
cat > "$LIB_DIR/on-idle" <<'EOF'
#!/bin/bash
lib="$(dirname "$0")"
if [ -n "${PIXQ_ASG_NAME:-}" ]; then
  if id="$("$lib/imds" instance-id)" && aws autoscaling terminate-instance-in-auto-scaling-group \
      --region "$AWS_REGION" --instance-id "$id" --should-decrement-desired-capacity; then
    echo "pixq: idle, leaving the group $PIXQ_ASG_NAME"
  else
    echo "pixq: idle, but the group keeps this instance (at its minimum): the worker goes on"
    systemctl --no-block start pixq-worker.service
  fi
  exit 0
fi
systemctl --no-block poweroff
EOF

# The group's termination lifecycle hook (pixq-drain) holds a terminating instance in
# Terminating:Wait; this watcher sees it in IMDS, stops the worker (SIGTERM: it finishes or
# releases what it holds within its grace), then lets the termination go on.
cat > "$LIB_DIR/lifecycle-watch" <<'EOF'
#!/bin/bash
set -uo pipefail
lib="$(dirname "$0")"
until id="$("$lib/imds" instance-id)"; do sleep 5; done
while :; do
  if [ "$("$lib/imds" autoscaling/target-lifecycle-state 2>/dev/null)" = Terminated ]; then
    echo "pixq: the group is terminating $id: stopping the worker"
    systemctl stop pixq-worker.service
    aws autoscaling complete-lifecycle-action --region "$AWS_REGION" --auto-scaling-group-name "$PIXQ_ASG_NAME" \
      --lifecycle-hook-name pixq-drain --instance-id "$id" --lifecycle-action-result CONTINUE
    exit 0
  fi
  sleep "${PIXQ_WATCH_SECS:-5}"
done
EOF
chmod 0755 "$LIB_DIR/imds" "$LIB_DIR/on-idle" "$LIB_DIR/lifecycle-watch"

cat > "$UNIT_DIR/pixq-worker.service" <<'EOF'
[Unit]
Description=pixq worker (long-polls the heavy SQS queue)
After=network-online.target
Wants=network-online.target
# A worker that cannot start (wrong queue URL, AccessDenied) fails again at every restart:
# with RestartSec=5 it reaches a 6th start within 5 minutes (about a minute of trying), and
# then systemd stops restarting it, the unit becomes "failed" (with Restart=, only then)
# and OnFailure= powers the machine off, which terminates it. A crash now and then stays
# under the limit and is restarted, even a message that kills the worker at every receive:
# it comes back once per visibility timeout (PIXQ_VISIBILITY_SECS), 3 starts in 5 minutes
# at the default 120 s, until the queue moves it to the dead-letter queue.
StartLimitIntervalSec=300
StartLimitBurst=5
OnFailure=pixq-worker-poweroff.service

[Service]
User=pixq
EnvironmentFile=/etc/pixq/worker.env
ExecStart=/usr/local/bin/pixq-worker
# 75: stopped because the queue stayed empty; that is not a failure, and the machine goes.
SuccessExitStatus=75
# '+': runs with full privileges (poweroff), unlike the worker itself.
ExecStopPost=+/bin/sh -c 'if [ "$EXIT_STATUS" = 75 ]; then /usr/local/lib/pixq/on-idle; fi'
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

# Started only by the worker's OnFailure=. The instance terminates with its journal, so the
# worker's last lines go to the serial console first: `aws ec2 get-console-output` still
# shows them (the reason it could not start) after the instance is gone.
cat > "$UNIT_DIR/pixq-worker-poweroff.service" <<'EOF'
[Unit]
Description=Power off: the pixq worker cannot start

[Service]
Type=oneshot
StandardOutput=journal+console
# '-': a failure to show the logs must not keep the machine up.
ExecStart=-/bin/sh -c 'echo "pixq-worker failed to start repeatedly; powering off (the instance terminates)"; /usr/bin/journalctl -u pixq-worker.service -n 30 --no-pager -o cat'
# --no-block: this unit is itself stopped by the poweroff it asks for.
ExecStart=/usr/bin/systemctl --no-block poweroff
EOF

if [ -n "${PIXQ_ASG_NAME:-}" ]; then
  cat > "$UNIT_DIR/pixq-lifecycle.service" <<'EOF'
[Unit]
Description=pixq lifecycle watcher: drains the worker when the Auto Scaling group terminates this instance
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=/etc/pixq/worker.env
ExecStart=/usr/local/lib/pixq/lifecycle-watch
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
fi

systemctl daemon-reload
systemctl enable --now pixq-worker.service
if [ -n "${PIXQ_ASG_NAME:-}" ]; then systemctl enable --now pixq-lifecycle.service; fi
log "pixq-worker started on $PIXQ_QUEUE_URL"
