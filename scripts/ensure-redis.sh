#!/usr/bin/env bash
# Makes sure a Redis answers at $REDIS_URL (default redis://127.0.0.1:6379/0): on a machine without
# Redis it installs the Debian packages (sudo when not root), then starts redis-server if nothing answers.
set -euo pipefail
cd "$(dirname "$0")/.."
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "ensure-redis: installing redis-server and redis-tools" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
fi
if redis-cli -u "$url" ping >/dev/null 2>&1; then exit 0; fi
case "$url" in
  redis://127.0.0.1:*|redis://localhost:*) ;;
  *) echo "ensure-redis: $url does not answer and is not local; start it yourself" >&2; exit 1 ;;
esac
port=$(echo "$url" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
echo "ensure-redis: starting redis-server on 127.0.0.1:$port" >&2
mkdir -p var/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
for _ in $(seq 50); do redis-cli -u "$url" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "ensure-redis: Redis did not come up; see var/redis/redis.log" >&2
exit 1
