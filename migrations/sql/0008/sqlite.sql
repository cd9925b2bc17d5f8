-- events_local, SQLite (migration 0008): the calendar is per time zone.
-- Frozen with the migration. The six BI views built on events_local are
-- unchanged (migration 0003): SQLite resolves a view's views when queried.

-- name: events_local
-- Every event with its site-local day and wall-clock time of day: the event's
-- source gives the zone (sources.timezone), the zone's calendar the day.
CREATE VIEW events_local AS
SELECT
    e.id,
    e.source,
    e.vendor,
    e.occurred_at,
    d.day,
    time(e.occurred_at, d.utc_offset_seconds || ' seconds') AS local_time,
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
    -- equality on the UTC date: indexed from the event's side
    AND d.utc_date = date(e.occurred_at)
    AND e.occurred_at >= d.valid_from
    AND e.occurred_at < d.valid_until;
