-- BI views, PostgreSQL (migration 0009: 0003's views and 0008's events_local, less deleted events). Frozen with the migration: a later
-- change to a view is a new migration with its own copy of the SQL.
--
-- Local days come from source_local_days (see syncd/bi.py): one row per
-- stretch of UTC time that is one local day and one UTC date at one UTC
-- offset. day is a plain column there, so WHERE day BETWEEN ... picks a few
-- calendar rows and then index ranges of events; nothing depends on the
-- session TimeZone (AT TIME ZONE 'UTC' is constant).

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
    AND e.occurred_at < d.valid_until
-- 0009: events the vendor deleted are left out of every view
WHERE e.deleted_at IS NULL;

-- name: door_activity_daily
-- How busy was each door each local day, and how much of it was denied?
-- IntServ reports no door id: its doors are told apart by name (and system_id,
-- an extra column; DoorFlow's is null).
CREATE VIEW door_activity_daily AS
SELECT
    source,
    day,
    door_id,
    (array_agg(door_name ORDER BY occurred_at DESC, id DESC))[1] AS door_name,
    count(*) FILTER (WHERE category = 'access_granted') AS granted,
    count(*) FILTER (WHERE category = 'access_denied') AS denied,
    count(*) FILTER (WHERE category = 'exit_request') AS exit_requests,
    count(*) AS events,
    system_id
FROM events_local
WHERE door_id IS NOT NULL OR door_name IS NOT NULL
GROUP BY source, day, system_id, door_id, CASE WHEN door_id IS NULL THEN door_name END;

-- name: attendance_daily
-- Who came in each local day, first and last admit.
CREATE VIEW attendance_daily AS
SELECT
    source,
    day,
    person_id,
    (array_agg(person_name ORDER BY source_updated_at DESC NULLS LAST, occurred_at DESC, id DESC))[1]
        AS person_name,
    min(occurred_at) AS first_admit_at,
    max(occurred_at) AS last_admit_at,
    count(*) AS admits
FROM events_local
WHERE category = 'access_granted' AND person_id IS NOT NULL
GROUP BY source, day, person_id;

-- name: denied_access
-- Every denied attempt and why.
CREATE VIEW denied_access AS
SELECT
    l.source,
    l.occurred_at,
    l.day,
    l.door_id,
    l.door_name,
    l.person_id,
    l.person_name,
    l.credential,
    l.event_code,
    coalesce(l.label, c.label) AS reason
FROM events_local AS l
LEFT JOIN event_codes AS c ON c.vendor = l.vendor AND c.code = l.event_code
WHERE l.category = 'access_denied';

-- name: repeated_denials
-- Who was denied more than 5 times in one local day?
CREATE VIEW repeated_denials AS
SELECT
    source,
    day,
    person_id,
    (array_agg(person_name ORDER BY source_updated_at DESC NULLS LAST, occurred_at DESC, id DESC))[1]
        AS person_name,
    count(*) AS denials,
    min(occurred_at) AS first_at,
    max(occurred_at) AS last_at
FROM events_local
WHERE category = 'access_denied' AND person_id IS NOT NULL
GROUP BY source, day, person_id
HAVING count(*) > 5;

-- name: after_hours_access
-- Admits outside the source's business hours (start inclusive, end
-- exclusive; an end before the start wraps past midnight).
CREATE VIEW after_hours_access AS
SELECT
    l.source,
    l.occurred_at,
    l.local_time,
    l.day,
    l.door_id,
    l.door_name,
    l.person_id,
    l.person_name,
    l.event_code,
    l.label
FROM events_local AS l
JOIN sources AS s ON s.source = l.source
WHERE l.category = 'access_granted'
    AND NOT CASE
        WHEN s.business_hours_start < s.business_hours_end
            THEN l.local_time >= s.business_hours_start AND l.local_time < s.business_hours_end
        ELSE l.local_time >= s.business_hours_start OR l.local_time < s.business_hours_end
    END;

-- name: door_state_latest
-- What state is each door in now (its newest door_state/tamper/device_status event)?
-- A skip scan of ix_events_door_state_latest: the recursive part steps from
-- one (source, door_id) to the next in the index, then each door's newest
-- state event is one backward index probe. Two probes a door, however many
-- state events there are (a DISTINCT ON would read them all).
CREATE VIEW door_state_latest AS
WITH RECURSIVE doors (source, door_id) AS (
    (
        SELECT source, door_id FROM events
        WHERE category IN ('door_state', 'tamper', 'device_status') AND door_id IS NOT NULL
        ORDER BY source, door_id
        LIMIT 1
    )
    UNION ALL
    SELECT later.source, later.door_id
    FROM doors
    CROSS JOIN LATERAL (
        SELECT e.source, e.door_id FROM events AS e
        WHERE e.category IN ('door_state', 'tamper', 'device_status') AND e.door_id IS NOT NULL
            AND (e.source, e.door_id) > (doors.source, doors.door_id)
        ORDER BY e.source, e.door_id
        LIMIT 1
    ) AS later
)
SELECT
    newest.source,
    newest.door_id,
    newest.door_name,
    newest.event_code,
    newest.label,
    newest.category,
    newest.occurred_at AS changed_at
FROM doors
CROSS JOIN LATERAL (
    SELECT e.source, e.door_id, e.door_name, e.event_code, e.label, e.category, e.occurred_at
    FROM events AS e
    WHERE e.source = doors.source AND e.door_id = doors.door_id
        AND e.category IN ('door_state', 'tamper', 'device_status')
        AND e.deleted_at IS NULL  -- 0009
    ORDER BY e.occurred_at DESC, e.id DESC
    LIMIT 1
) AS newest;

-- name: sync_health
-- Is every source syncing? (No refresh token here: the view reads
-- sync_state with its owner's rights, so a BI role needs no grant on it.)
CREATE VIEW sync_health AS
SELECT
    st.source,
    s.kind,
    st.last_success_at,
    st.last_error,
    st.last_error_at,
    st.consecutive_failures,
    (SELECT count(*) FROM events AS e WHERE e.source = st.source AND e.deleted_at IS NULL) AS events,
    (SELECT count(*) FROM rejected_events AS r WHERE r.source = st.source) AS rejected,
    (SELECT max(e.occurred_at) FROM events AS e WHERE e.source = st.source AND e.deleted_at IS NULL) AS newest_event_at
FROM sync_state AS st
LEFT JOIN sources AS s ON s.source = st.source;
