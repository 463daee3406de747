#!/bin/sh
# The central station's database on its PostgreSQL server (README: "Running the central station on several
# nodes"): a login role and a database it owns, with a random password written to ./vmond-database-password
# (mode 0600) for /etc/vmond/database-password on every node. Run it once, as root, on the database machine
# (Debian's postgresql package). vmond creates its tables itself, at the first node's start. The C.UTF-8 locale
# sorts text by its bytes, as SQLite does (README: "Storage: SQLite or PostgreSQL").
#
#   sudo sh setup.sh                          # role and database "vmond"
#   sudo VMOND_DB=vmond_north sh setup.sh     # other names: VMOND_DB_ROLE, VMOND_DB
#
# PSQL is how the superuser's psql is run (default: as the postgres system user, over the local socket).
set -eu

ROLE=${VMOND_DB_ROLE:-vmond}
DB=${VMOND_DB:-vmond}
PSQL=${PSQL:-runuser -u postgres -- psql}
OUT=${VMOND_DB_PASSWORD_FILE:-./vmond-database-password}

if [ -e "$OUT" ]; then
    echo "$OUT exists already: not overwriting a password that may be in use" >&2
    exit 1
fi
umask 077
openssl rand -hex 24 > "$OUT"

# The password travels in the environment (readable by root and the process's own user only), not on a command
# line that `ps` shows; psql's \getenv reads it and :'password' quotes it as an SQL literal.
VMOND_DB_PASSWORD=$(cat "$OUT") $PSQL -X -q -v ON_ERROR_STOP=1 -v role="$ROLE" -v db="$DB" <<'SQL'
\getenv password VMOND_DB_PASSWORD
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' LOCALE 'C.UTF-8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL

echo "role $ROLE and database $DB created; the password is in $OUT. On every node:"
echo "  sudo install -o root -g vmond -m 0640 vmond-database-password /etc/vmond/database-password"
