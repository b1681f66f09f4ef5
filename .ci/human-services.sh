# Sourced by .ci/run: what the human-evaluation tests need (tests/human_helpers.py reads the two variables).
# Debian's chromium (driven by Playwright's Python package, never `playwright install`) and a
# throw-away PostgreSQL server on 127.0.0.1 with a role and a database for the tests.
if ! command -v chromium >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null
fi
export DROVER_TEST_CHROMIUM=/usr/bin/chromium
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PG_PORT=${DROVER_TEST_PG_PORT:-54329}
PG_DATA=$(mktemp -d /tmp/drover-pg.XXXXXX)
chown postgres "$PG_DATA"
su postgres -c "$PG_BIN/initdb -D $PG_DATA -A trust -U postgres" >/dev/null
su postgres -c "$PG_BIN/pg_ctl -D $PG_DATA -l $PG_DATA/server.log -w -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c max_connections=200' start" >/dev/null
trap "su postgres -c '$PG_BIN/pg_ctl -D $PG_DATA stop -m fast' >/dev/null 2>&1 || true" EXIT
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -q -c "CREATE ROLE drover LOGIN PASSWORD 'drover'" -c "CREATE DATABASE drover_test OWNER drover"
export DROVER_TEST_PG_DSN="postgresql+psycopg://drover:drover@127.0.0.1:$PG_PORT/drover_test"
