#!/usr/bin/env bash
# Makes sure a Redis answers at $REDIS_URL (default redis://127.0.0.1:6379/0); starts one if not.
set -euo pipefail
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
if redis-cli -u "$url" ping >/dev/null 2>&1; then exit 0; fi
case "$url" in
  redis://127.0.0.1:*|redis://localhost:*) ;;
  *) echo "ensure-redis: $url does not answer and is not local; start it yourself" >&2; exit 1 ;;
esac
port=$(echo "$url" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
echo "ensure-redis: starting redis-server on 127.0.0.1:$port"
mkdir -p var/redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$PWD/var/redis" --logfile "$PWD/var/redis/redis.log"
for _ in $(seq 50); do redis-cli -u "$url" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "ensure-redis: Redis did not come up; see var/redis/redis.log" >&2
exit 1
