-- Two roles for the CI of a team that shares one PostgreSQL metadata store,
-- enforced by the database itself (zenflow's own checks come on top):
--
--   zenflow_pr       what a pull request's CI needs: record runs, register
--                    model versions, move aliases that are not protected.
--                    It cannot move a protected alias (`production`), not even
--                    with raw SQL or `--force`, and cannot change protections.
--   zenflow_release  all of that, and it moves protected aliases and protects
--                    or unprotects them: what the CI of `main` needs.
--
-- Run it as the owner of zenflow's tables, after zenflow created them (any
-- zenflow command on the stack does), in the database (and schema) of the
-- stack; it is idempotent, so run it again after an upgrade of zenflow:
--
--   psql "$OWNER_URL" -f roles.sql            # or: <pipeline> stacks roles-sql | psql "$OWNER_URL"
--   psql "$OWNER_URL" -c 'GRANT zenflow_pr TO ci_pull_requests'
--   psql "$OWNER_URL" -c 'GRANT zenflow_release TO ci_main'
--
-- The table owner and superusers are neither, and are not restricted.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'zenflow_pr') THEN
        CREATE ROLE zenflow_pr NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'zenflow_release') THEN
        CREATE ROLE zenflow_release NOLOGIN;
    END IF;
END
$$;

GRANT zenflow_pr TO zenflow_release;

DO $$
DECLARE
    s TEXT := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO zenflow_pr', s);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO zenflow_pr', s);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO zenflow_pr', s);
    -- Tables later migrations create get the same.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO zenflow_pr', s);
END
$$;

-- Protections are changed by releases only.
REVOKE INSERT, UPDATE, DELETE ON model_protections FROM zenflow_pr;
GRANT INSERT, UPDATE, DELETE ON model_protections TO zenflow_release;

-- Whoever is a pull request's role and not a release's cannot change who
-- holds a protected alias, however the change is written.
CREATE OR REPLACE FUNCTION zenflow_guard_protected_alias() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    m TEXT;
    a TEXT;
BEGIN
    IF NOT pg_has_role(current_user, 'zenflow_pr', 'MEMBER')
        OR pg_has_role(current_user, 'zenflow_release', 'MEMBER') THEN
        RETURN COALESCE(NEW, OLD);
    END IF;
    -- The row before the change (an update or delete) and after (an insert or update).
    FOR i IN 1..2 LOOP
        IF i = 1 AND TG_OP <> 'INSERT' THEN
            m := OLD.model;
            a := OLD.alias;
        ELSIF i = 2 AND TG_OP <> 'DELETE' THEN
            m := NEW.model;
            a := NEW.alias;
        ELSE
            CONTINUE;
        END IF;
        IF EXISTS (SELECT 1 FROM model_protections p WHERE p.model = m AND p.alias = a) THEN
            RAISE EXCEPTION 'alias `%` of model `%` is protected: role `%` (zenflow_pr) may not move it; the CI of main (zenflow_release) moves it',
                a, m, current_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END LOOP;
    RETURN COALESCE(NEW, OLD);
END
$$;

DROP TRIGGER IF EXISTS zenflow_guard_protected_alias ON model_aliases;
CREATE TRIGGER zenflow_guard_protected_alias
    BEFORE INSERT OR UPDATE OR DELETE ON model_aliases
    FOR EACH ROW EXECUTE FUNCTION zenflow_guard_protected_alias();
