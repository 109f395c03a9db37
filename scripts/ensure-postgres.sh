#!/usr/bin/env bash
# Prints a DATABASE_URL for a PostgreSQL the tests can use, starting the local cluster if needed.
# Uses $DATABASE_URL if it is set and answers; else the local server (trust auth as on our CI
# machines, or a `cms` role it creates through the postgres system account).
set -euo pipefail
answers() { PGCONNECT_TIMEOUT=3 psql "$1" -qtAc "select 1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

if [ -n "${DATABASE_URL:-}" ] && answers "$DATABASE_URL"; then echo "$DATABASE_URL"; exit 0; fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -z "$version" ]; then
    echo "ensure-postgres: installing PostgreSQL" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql postgresql-client >&2
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    if [ -z "$version" ]; then echo "ensure-postgres: PostgreSQL did not install" >&2; exit 1; fi
  fi
  echo "ensure-postgres: starting PostgreSQL $version" >&2
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || $SUDO pg_ctlcluster "$version" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi

if answers "postgres://postgres@127.0.0.1:5432/postgres"; then
  echo "postgres://postgres@127.0.0.1:5432/cms"; exit 0
fi
# Default Debian auth: create a password role through the postgres system account.
$SUDO -u postgres psql -qtAc "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='cms')
  THEN CREATE ROLE cms LOGIN CREATEDB PASSWORD 'cms'; END IF; END\$\$;" >/dev/null 2>&1 \
  || su postgres -c "psql -qtAc \"DO \\\$\\\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='cms') THEN CREATE ROLE cms LOGIN CREATEDB PASSWORD 'cms'; END IF; END\\\$\\\$;\"" >/dev/null
echo "postgres://cms:cms@127.0.0.1:5432/cms"
