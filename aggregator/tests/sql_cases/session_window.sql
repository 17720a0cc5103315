-- Session windows per user (Spark's session_window): a session ends after
-- 2 minutes without events; out-of-order events merge sessions.
SELECT session_window(timestamp, '2 minutes') AS session, user_id, COUNT(*) AS n, MIN(item_id) AS first_item
FROM SOURCE
GROUP BY session_window(timestamp, '2 minutes'), user_id
