-- Named queries of syncd/bi.py (loaded by name; see syncd.bi.QUERIES).
--
-- Both expand a zone's offset spans (a, b, o): [a, b) at UTC offset o seconds,
-- passed as one JSON array of {a, b, o}, into local days: one row per local day the span
-- touches, cut at local midnight. Done in SQL because 48k rows a source are
-- a round trip from Python; this is one statement.

-- name: write_calendar_postgresql
INSERT INTO source_local_days (source, day, valid_from, valid_until, utc_offset_seconds)
SELECT
    :source,
    CAST(d AS date),
    greatest(s.a, (d - s.o * INTERVAL '1 second') AT TIME ZONE 'UTC'),
    least(s.b, (d + INTERVAL '1 day' - s.o * INTERVAL '1 second') AT TIME ZONE 'UTC'),
    s.o
FROM jsonb_to_recordset(CAST(:spans AS jsonb)) AS s (a timestamptz, b timestamptz, o integer)
CROSS JOIN LATERAL generate_series(
    date_trunc('day', (s.a AT TIME ZONE 'UTC') + s.o * INTERVAL '1 second'),
    (s.b AT TIME ZONE 'UTC') + s.o * INTERVAL '1 second' - INTERVAL '1 microsecond',
    INTERVAL '1 day'
) AS d

-- name: write_calendar_sqlite
-- Instants are text 'YYYY-MM-DD HH:MM:SS.000000' (what the store writes, so
-- text order is time order); every offset change falls on a whole second.
WITH RECURSIVE
spans (a, b, o) AS (
    SELECT json_extract(value, '$.a'), json_extract(value, '$.b'), json_extract(value, '$.o')
    FROM json_each(:spans)
),
days (a, b, o, d) AS (
    SELECT a, b, o, date(a, o || ' seconds') FROM spans
    UNION ALL
    SELECT a, b, o, date(d, '+1 day') FROM days
    WHERE strftime('%Y-%m-%d %H:%M:%S', date(d, '+1 day'), (-o) || ' seconds') || '.000000' < b
)
INSERT INTO source_local_days (source, day, valid_from, valid_until, utc_offset_seconds)
SELECT
    :source,
    d,
    max(a, strftime('%Y-%m-%d %H:%M:%S', d, (-o) || ' seconds') || '.000000'),
    min(b, strftime('%Y-%m-%d %H:%M:%S', date(d, '+1 day'), (-o) || ' seconds') || '.000000'),
    o
FROM days
