-- No GROUP BY: one row.
SELECT COUNT(*) AS n, AVG(user_id) AS avg_user, MAX(timestamp) AS latest FROM SOURCE
