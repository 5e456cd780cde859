#!/bin/sh
# Run once by the postgres image when it creates its data directory: the consumer's own role, owner of
# the `messages` database (so its migrations apply) and nothing more: not a superuser, and it can create
# neither databases nor roles. The superuser `postgres` stays for the operator.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v password="$MESSAGES_PASSWORD" <<'SQL'
CREATE ROLE messages LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
ALTER DATABASE messages OWNER TO messages;
SQL
