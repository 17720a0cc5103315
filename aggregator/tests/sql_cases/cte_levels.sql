-- Aggregations of aggregations with CTEs, three levels: per 5-minute window and user the
-- events; per window the average over its users; then, per number of users, how many
-- windows have it and their highest average.
WITH per_user AS (
    SELECT window(timestamp, '5 minutes') AS window, user_id, COUNT(*) AS n
    FROM SOURCE
    GROUP BY window(timestamp, '5 minutes'), user_id
),
per_window AS (
    SELECT window, AVG(n) AS avg_n, COUNT(*) AS users, SUM(CASE WHEN n > 1 THEN 1 ELSE 0 END) AS repeat_users
    FROM per_user
    GROUP BY window
)
SELECT users, COUNT(*) AS windows, MAX(avg_n) AS best_avg, SUM(repeat_users) AS repeat_users
FROM per_window
GROUP BY users
