-- A least-privilege role for a magray memory on PostgreSQL (issue 18).
--
-- Run once, as an administrator, connected to the database the memory will use:
--     createdb memory
--     psql -d memory -v ON_ERROR_STOP=1 -f postgres-role.sql
--     psql -d memory -c '\password magray'     -- typed at a prompt, never kept in a file
-- then give magray the URL without the password, for example
--     database = "postgresql://magray@db.example/memory?sslmode=verify-full"
-- and the password through ~/.pgpass (mode 0600), PGPASSWORD, or ?password_file=PATH.
--
-- What the role can do: log in (a bounded number of connections), connect to this one
-- database, and own the schema "magray" in it, where magray's migrations create and change
-- its tables. What it cannot: be a superuser, create databases or roles, replicate, bypass
-- row security, create objects in "public", or touch any other database.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'magray') THEN
        CREATE ROLE magray LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
            NOBYPASSRLS NOINHERIT CONNECTION LIMIT 64;
    END IF;
END $$;
ALTER ROLE magray NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
    CONNECTION LIMIT 64;

-- The extensions magray uses, made by the administrator (unaccent is not a trusted one).
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;
CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;

-- Nobody but the owner and magray connects; nobody creates objects in public.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO magray', current_database());
    EXECUTE format('ALTER ROLE magray IN DATABASE %I SET search_path = magray, public',
                   current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO magray;

CREATE SCHEMA IF NOT EXISTS magray AUTHORIZATION magray;
