#!/usr/bin/env bash
# Make a Docker engine answer on this machine: install docker.io, docker-compose and debootstrap
# from Debian's packages when missing (root only), and start dockerd in the background when no
# engine answers. Prints nothing on success beyond what it did. Used by `./run compose-test`.
#   ensure-engine.sh [PIDFILE]   when it starts dockerd, writes its pid there (the caller stops it)
set -euo pipefail
# dockerd and debootstrap live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
pidfile="${1:-}"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-engine: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "ensure-engine: apt-get install ${need[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-engine: no Docker engine answers and only root may start dockerd here" >&2
  exit 1
fi
log="${ORDER_CONNECTOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/order-connector}/dockerd.log"
mkdir -p "$(dirname "$log")"
echo "ensure-engine: starting dockerd (log: $log)" >&2
nohup dockerd >>"$log" 2>&1 </dev/null &
[ -z "$pidfile" ] || echo $! >"$pidfile"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "ensure-engine: dockerd did not answer within 30s; see $log" >&2
tail -n 20 "$log" >&2
exit 1
