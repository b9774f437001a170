#!/usr/bin/env bash
# Installs (if missing) and starts Debian's PostgreSQL, then creates the role and databases
# the tests and the demo use. Idempotent; needs root (apt-get, su postgres).
set -euo pipefail
PGROLE="${LAER_PG_ROLE:-laer}"
PGPASS="${LAER_PG_PASSWORD:-laer}"
DATABASES="${LAER_PG_DATABASES:-laer_test laer_prefect_test laer_consumers_test laer_bench}"

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
VERSION="$(ls /etc/postgresql | sort -n | tail -1)"
if [ -z "$(pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main"')" ]; then
  pg_createcluster "$VERSION" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$VERSION" main start
fi
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='$PGROLE'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role $PGROLE login createdb password '$PGPASS'\""
for db in $DATABASES; do
  su postgres -c "psql -qtAc \"select 1 from pg_database where datname='$db'\"" | grep -q 1 \
    || su postgres -c "createdb -O $PGROLE $db"
done
echo "postgres: PostgreSQL $VERSION ready on 127.0.0.1:5432 (role $PGROLE; databases: $DATABASES)"
