-- ORDER BY … LIMIT over an aggregate of an aggregate: the five 5-minute windows whose
-- users were the most active on average (an incremental top-N over the outer level).
WITH per_user AS (
    SELECT window(timestamp, '5 minutes') AS window, user_id, COUNT(*) AS n
    FROM SOURCE
    GROUP BY window(timestamp, '5 minutes'), user_id
),
per_window AS (
    SELECT window, AVG(n) AS avg_per_user, COUNT(*) AS users
    FROM per_user
    GROUP BY window
)
SELECT window, avg_per_user, users
FROM per_window
WHERE users > 1
ORDER BY avg_per_user DESC, window
LIMIT 5
