-- BI views, SQLite (migration 0009: 0003's views and 0008's events_local, less deleted events). Frozen with the migration: a later
-- change to a view is a new migration with its own copy of the SQL.
--
-- SQLite has no time-zone database: local days come from source_local_days,
-- written by syncd from Python's zoneinfo (see syncd/bi.py). Instants are
-- UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (so text order is time order), day
-- is 'YYYY-MM-DD', local_time 'HH:MM:SS'; business hours are stored as
-- 'HH:MM:SS.ffffff' and compared on their first 8 characters.

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
    max(newest_door_name) AS door_name,
    sum(category = 'access_granted') AS granted,
    sum(category = 'access_denied') AS denied,
    sum(category = 'exit_request') AS exit_requests,
    count(*) AS events,
    system_id
FROM (
    SELECT
        *,
        CASE WHEN door_id IS NULL THEN door_name END AS door_key,
        first_value(door_name) OVER (
            PARTITION BY source, day, system_id, door_id,
                CASE WHEN door_id IS NULL THEN door_name END
            ORDER BY occurred_at DESC, id DESC
        ) AS newest_door_name
    FROM events_local
    WHERE door_id IS NOT NULL OR door_name IS NOT NULL
)
GROUP BY source, day, system_id, door_id, door_key;

-- name: attendance_daily
-- Who came in each local day, first and last admit.
CREATE VIEW attendance_daily AS
SELECT
    source,
    day,
    person_id,
    max(newest_name) AS person_name,
    min(occurred_at) AS first_admit_at,
    max(occurred_at) AS last_admit_at,
    count(*) AS admits
FROM (
    SELECT
        *,
        first_value(person_name) OVER (
            PARTITION BY source, day, person_id
            ORDER BY source_updated_at IS NULL, source_updated_at DESC, occurred_at DESC, id DESC
        ) AS newest_name
    FROM events_local
    WHERE category = 'access_granted' AND person_id IS NOT NULL
)
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
    max(newest_name) AS person_name,
    count(*) AS denials,
    min(occurred_at) AS first_at,
    max(occurred_at) AS last_at
FROM (
    SELECT
        *,
        first_value(person_name) OVER (
            PARTITION BY source, day, person_id
            ORDER BY source_updated_at IS NULL, source_updated_at DESC, occurred_at DESC, id DESC
        ) AS newest_name
    FROM events_local
    WHERE category = 'access_denied' AND person_id IS NOT NULL
)
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
        WHEN substr(s.business_hours_start, 1, 8) < substr(s.business_hours_end, 1, 8)
            THEN l.local_time >= substr(s.business_hours_start, 1, 8)
                AND l.local_time < substr(s.business_hours_end, 1, 8)
        ELSE l.local_time >= substr(s.business_hours_start, 1, 8)
            OR l.local_time < substr(s.business_hours_end, 1, 8)
    END;

-- name: door_state_latest
-- What state is each door in now (its newest door_state/tamper/device_status event)?
CREATE VIEW door_state_latest AS
SELECT source, door_id, door_name, event_code, label, category, changed_at
FROM (
    SELECT
        source,
        door_id,
        door_name,
        event_code,
        label,
        category,
        occurred_at AS changed_at,
        row_number() OVER (
            PARTITION BY source, door_id ORDER BY occurred_at DESC, id DESC
        ) AS newest
    FROM events
    WHERE category IN ('door_state', 'tamper', 'device_status') AND door_id IS NOT NULL
        AND deleted_at IS NULL  -- 0009
)
WHERE newest = 1;

-- name: sync_health
-- Is every source syncing?
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
