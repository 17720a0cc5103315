-- A second stage over a windowed first stage: closed windows stay in AGGREGATED.
SELECT window(timestamp, '5 minutes') AS window, user_id, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '5 minutes'), user_id
-- for_each_batch
SELECT window, MAX(n) AS busiest_user_interactions, COUNT(*) AS active_users FROM AGGREGATED GROUP BY window
-- end_for
