-- events_local, PostgreSQL (migration 0008): the calendar is per time zone.
-- Frozen with the migration. The six BI views built on events_local are
-- unchanged (migration 0003): same columns, same answers.

-- name: events_local
-- Every event with its site-local day and wall-clock time of day: the event's
-- source gives the zone (sources.timezone), the zone's calendar the day.
CREATE OR REPLACE VIEW events_local AS
SELECT
    e.id,
    e.source,
    e.vendor,
    e.occurred_at,
    d.day,
    CAST((e.occurred_at AT TIME ZONE 'UTC') + d.utc_offset_seconds * INTERVAL '1 second' AS time)
        AS local_time,
    e.event_code,
    e.category,
    e.label,
    e.door_id,
    e.door_name,
    e.person_id,
    e.person_name,
    e.credential,
    e.system_id,
    e.source_updated_at
FROM events AS e
JOIN sources AS s ON s.source = e.source
JOIN zone_local_days AS d
    ON d.timezone = s.timezone
    -- equality on the UTC date: indexed on both sides (ix_events_source_utc_date,
    -- ix_zone_local_days_timezone_utc_date) and well estimated by the planner
    AND d.utc_date = CAST(e.occurred_at AT TIME ZONE 'UTC' AS date)
    AND e.occurred_at >= d.valid_from
    AND e.occurred_at < d.valid_until;
