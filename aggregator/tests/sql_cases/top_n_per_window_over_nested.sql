-- Window functions over an aggregate of an aggregate, partitioned by the window: per
-- 5-minute window, the two interaction types with the most users.
WITH per_user AS (
    SELECT window(timestamp, '5 minutes') AS window, user_id, interaction_type, COUNT(*) AS n
    FROM SOURCE
    GROUP BY window(timestamp, '5 minutes'), user_id, interaction_type
),
per_type AS (
    SELECT window, interaction_type, COUNT(*) AS users, SUM(n) AS events
    FROM per_user
    GROUP BY window, interaction_type
)
SELECT window, interaction_type, users, events, place FROM (
    SELECT window, interaction_type, users, events,
        ROW_NUMBER() OVER (PARTITION BY window ORDER BY users DESC, events DESC, interaction_type) AS place
    FROM per_type
) AS ranked
WHERE place <= 2
