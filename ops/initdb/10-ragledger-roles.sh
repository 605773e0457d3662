#!/bin/sh
# Run once by the postgres image's entrypoint, when the data volume is first initialised
# (files in /docker-entrypoint-initdb.d). It sets up the role model the migrations expect:
#
#   ragledger_owner  LOGIN, owns the database and every table; runs `ragledger db upgrade`.
#   ragledger_app    NOLOGIN; may only INSERT and SELECT on the ledger (the grants are in
#                    alembic/versions/0001_ledger.py). The app switches to it with SET ROLE
#                    (DATABASE_APP_ROLE=ragledger_app).
#   ragledger_api    LOGIN, a member of ragledger_app and nothing else: what the API and the
#                    runner connect as. Even after RESET ROLE it holds no more than
#                    ragledger_app's privileges, and as a non-superuser it cannot switch
#                    the append-only triggers off (session_replication_role).
#
# Neither login is a superuser, so the extension is created here, by the superuser; the
# migration's CREATE EXTENSION IF NOT EXISTS then finds it.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$RAGLEDGER_OWNER_PASSWORD" \
    -v api_password="$RAGLEDGER_API_PASSWORD" <<'SQL'
CREATE ROLE ragledger_app NOLOGIN;
CREATE ROLE ragledger_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE ragledger_api LOGIN PASSWORD :'api_password';
GRANT ragledger_app TO ragledger_owner;
GRANT ragledger_app TO ragledger_api;
CREATE DATABASE ragledger OWNER ragledger_owner;
\connect ragledger
CREATE EXTENSION IF NOT EXISTS vector;
SQL
