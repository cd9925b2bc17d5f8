-- The read-only role for BI tools (Grafana, Metabase, Superset, Power BI).
-- Run once by the postgres image on an empty volume (/docker-entrypoint-initdb.d),
-- as the database owner. A plain SQL script for the compose demo; `syncd bi-role`
-- (see the README) prints the same kind of SQL for any database.
-- The tables do not exist yet at this point: deploy/compose/bi-grants.sql grants
-- SELECT on them after each `syncd migrate`.
-- Demo password: change it (ALTER ROLE syncd_bi PASSWORD '...') anywhere real.
CREATE ROLE syncd_bi LOGIN PASSWORD 'syncd-bi-demo'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION CONNECTION LIMIT 20;
-- Belt and braces: even a privilege granted by mistake cannot be used to write.
ALTER ROLE syncd_bi SET default_transaction_read_only = on;
ALTER ROLE syncd_bi SET statement_timeout = '60s';
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO syncd_bi', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO syncd_bi;
