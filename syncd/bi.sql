-- Named queries of syncd/bi.py (loaded by name; see syncd.bi.QUERIES).
--
-- Both expand a zone's offset spans (a, b, o): [a, b) at UTC offset o seconds,
-- passed as one JSON array of {a, b, o}, into the rows of zone_local_days:
-- the span cut at every local midnight and every UTC midnight. Done in SQL
-- because ~70k rows a zone are many round trips from Python; this is one
-- statement.

-- name: write_calendar_postgresql
INSERT INTO zone_local_days (timezone, day, utc_date, valid_from, valid_until, utc_offset_seconds)
SELECT :timezone, piece.day, CAST(piece.valid_from AT TIME ZONE 'UTC' AS date), piece.valid_from,
       piece.valid_until, piece.o
FROM (
    SELECT
        local.day,
        greatest(local.valid_from, m.mid) AS valid_from,
        least(local.valid_until, m.mid + INTERVAL '1 day') AS valid_until,
        local.o
    FROM (
        SELECT
            CAST(d AS date) AS day,
            greatest(s.a, (d - s.o * INTERVAL '1 second') AT TIME ZONE 'UTC') AS valid_from,
            least(s.b, (d + INTERVAL '1 day' - s.o * INTERVAL '1 second') AT TIME ZONE 'UTC')
                AS valid_until,
            s.o
        FROM jsonb_to_recordset(CAST(:spans AS jsonb)) AS s (a timestamptz, b timestamptz, o integer)
        CROSS JOIN LATERAL generate_series(
            date_trunc('day', (s.a AT TIME ZONE 'UTC') + s.o * INTERVAL '1 second'),
            (s.b AT TIME ZONE 'UTC') + s.o * INTERVAL '1 second' - INTERVAL '1 microsecond',
            INTERVAL '1 day'
        ) AS d
    ) AS local
    -- a local day (at most 24 h at one offset) touches at most two UTC dates
    CROSS JOIN LATERAL (
        VALUES
            (date_trunc('day', local.valid_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
            (date_trunc('day', local.valid_from AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                + INTERVAL '1 day')
    ) AS m (mid)
) AS piece
WHERE piece.valid_from < piece.valid_until

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
),
local (day, valid_from, valid_until, o) AS (
    SELECT
        d,
        max(a, strftime('%Y-%m-%d %H:%M:%S', d, (-o) || ' seconds') || '.000000'),
        min(b, strftime('%Y-%m-%d %H:%M:%S', date(d, '+1 day'), (-o) || ' seconds') || '.000000'),
        o
    FROM days
),
piece (day, valid_from, valid_until, o) AS (
    -- a local day (at most 24 h at one offset) touches at most two UTC dates
    SELECT
        day,
        max(valid_from, date(valid_from, '+' || k || ' days') || ' 00:00:00.000000'),
        min(valid_until, date(valid_from, '+' || (k + 1) || ' days') || ' 00:00:00.000000'),
        o
    FROM local CROSS JOIN (SELECT 0 AS k UNION ALL SELECT 1)
)
INSERT INTO zone_local_days (timezone, day, utc_date, valid_from, valid_until, utc_offset_seconds)
SELECT :timezone, day, date(valid_from), valid_from, valid_until, o
FROM piece
WHERE valid_from < valid_until
