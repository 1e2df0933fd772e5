#!/usr/bin/env bash
# The container path, tested for real (`./run compose-test`): build the local base images
# (debootstrap + docker import, cached), a Kafka image from those and the project's broker jars,
# and the connector image from this tree; bring docker-compose.yml up; the example producer sends
# a realistic stream and exits 0 once every record has an outcome on the results or errors
# topic; check /metrics and a SIGTERM drain; tear everything down (also on failure).
# Needs root for the first run (apt-get, dockerd); later runs reuse the cached images.
set -euo pipefail
# dockerd and debootstrap live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUTCOME_DEADLINE_S=${OUTCOME_DEADLINE_S:-60}
started=$(date +%s)
say() { echo "compose-test: $* ($(($(date +%s) - started))s)" >&2; }

# A dockerd started here is stopped again at the end (nothing keeps running after CI).
dockerd_pidfile="$(mktemp /tmp/order-connector-dockerd.XXXXXX)"
stop_started_dockerd() {
  local pid
  pid="$(cat "$dockerd_pidfile" 2>/dev/null || true)"
  rm -f "$dockerd_pidfile"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  echo "compose-test: dockerd $pid still running 20s after SIGTERM" >&2
}
trap stop_started_dockerd EXIT
bash deploy/docker/ensure-engine.sh "$dockerd_pidfile"
bash deploy/docker/base-images.sh
say "base images ready"

# Wheelhouse: containers here cannot reach PyPI (TLS interception), so pip runs on the host.
rm -f deploy/docker/wheels/*.whl
"$PY" -m pip wheel --quiet --disable-pip-version-check --wheel-dir deploy/docker/wheels \
  . "setuptools>=77" wheel
rm -f deploy/docker/wheels/order_status_connector-*.whl # the image builds it from source
lib="$("$PY" -m connector.dev.devbroker fetch)"
rm -rf deploy/docker/kafka/libs
cp -r "$lib" deploy/docker/kafka/libs
say "wheelhouse and broker jars ready"

export KAFKA_IMAGE=local/kafka:4.4.0
export CONNECTOR_IMAGE=order-status-connector:compose-test
export CONNECTOR_BASE_IMAGE=local/debian-python:bookworm
docker build --quiet -t "$KAFKA_IMAGE" deploy/docker/kafka >/dev/null
docker build --quiet --build-arg BASE_IMAGE="$CONNECTOR_BASE_IMAGE" --build-arg PIP_NO_INDEX=1 \
  -t "$CONNECTOR_IMAGE" . >/dev/null
size=$(docker image inspect "$CONNECTOR_IMAGE" --format '{{.Size}}')
say "images built: $CONNECTOR_IMAGE $((size / 1000000)) MB, $KAFKA_IMAGE"

export COMPOSE_PROJECT_NAME="oc-compose-test-$$"
CONNECTOR_HOST_PORT=$("$PY" -c 'from connector.dev.devbroker import free_port; print(free_port())')
export CONNECTOR_HOST_PORT
compose() { docker-compose --ansi never "$@"; }
teardown() {
  local status=$?
  if [ "$status" != 0 ]; then
    echo "compose-test: FAILED; last logs:" >&2
    compose logs --no-color --tail=40 >&2 || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  # The build stage's leftovers (its layers change with every commit anyway).
  docker image prune -f --filter label=org.order-status-connector.stage=build >/dev/null 2>&1 || true
  stop_started_dockerd
  echo "compose-test: exit $status, total $(($(date +%s) - started))s" >&2
}
trap teardown EXIT

up_at=$(date +%s)
compose up -d --no-build >/dev/null
producer="$(compose ps -q producer)"
# The producer exits once every record it sent has an outcome (or after its own deadline).
code=$(timeout $((OUTCOME_DEADLINE_S + 60)) docker wait "$producer")
outcomes_after=$(($(date +%s) - up_at))
# The logs are read once into a variable: with pipefail, `docker logs | grep -q` fails at
# random (grep exits at its first match and docker logs dies of SIGPIPE, status 141).
producer_logs=$(docker logs "$producer" 2>&1)
sed 's/^/  producer| /' <<<"$producer_logs"
if [ "$code" != 0 ]; then
  say "the example producer exited $code"
  exit 1
fi
line=$(grep -E '^[0-9]+ outcomes for [0-9]+ input records' <<<"$producer_logs")
read -r got _ _ want _ <<<"$line"
[ "$got" = "$want" ] && [ "$got" -gt 0 ] || { say "outcomes incomplete: $line"; exit 1; }
grep -q 'invalid_event=' <<<"$producer_logs" || { say "no error records seen"; exit 1; }
# Where the time went: when each container started, relative to `up`.
for service in kafka topics-init sandbox connector producer; do
  at=$(docker inspect "$(compose ps -q "$service")" --format '{{.State.StartedAt}}')
  echo "  $service started $(($(date -d "$at" +%s) - up_at))s after 'up'" >&2
done
say "all $got outcomes on the results/errors topics ${outcomes_after}s after 'up'"
if [ "$outcomes_after" -gt "$OUTCOME_DEADLINE_S" ]; then
  say "outcomes took ${outcomes_after}s from 'up' (limit ${OUTCOME_DEADLINE_S}s)"
  exit 1
fi

metrics=$(curl -fsS "http://127.0.0.1:$CONNECTOR_HOST_PORT/metrics")
consumed=$(awk '/^connector_records_consumed_total/ {s += $2} END {print s + 0}' <<<"$metrics")
[ "${consumed%.*}" -ge "$want" ] || { say "/metrics counts $consumed consumed, want $want"; exit 1; }
say "/metrics: $consumed input records consumed"

# SIGTERM drains and exits 0 well inside the grace period.
stop_at=$(date +%s)
compose stop -t 30 connector >/dev/null 2>&1
connector="$(compose ps -q connector)"
exit_code=$(docker inspect "$connector" --format '{{.State.ExitCode}}')
connector_logs=$(docker logs "$connector" 2>&1)
grep -q '"event": "connector_stopped"' <<<"$connector_logs" ||
  { say "no connector_stopped log line after SIGTERM"; exit 1; }
[ "$exit_code" = 0 ] || { say "connector exited $exit_code on SIGTERM"; exit 1; }
say "SIGTERM: connector drained and exited 0 in $(($(date +%s) - stop_at))s"
say "PASSED"
