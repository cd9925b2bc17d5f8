-- SELECT for the BI role on everything syncd's migrations created, except the
-- secrets: sync_state.refresh_token (the rotated OAuth refresh token) and
-- sync_state.access_token (the OAuth access token shared by syncd's processes).
-- Idempotent; run after every `syncd migrate` (docker-compose.yml's bi-grants service).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO syncd_bi;
REVOKE SELECT ON sync_state FROM syncd_bi;
DO $$
DECLARE
    readable text;
BEGIN
    SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
      INTO readable
      FROM information_schema.columns
     WHERE table_schema = 'public' AND table_name = 'sync_state'
       AND column_name NOT IN ('refresh_token', 'access_token');
    EXECUTE format('GRANT SELECT (%s) ON sync_state TO syncd_bi', readable);
END
$$;
