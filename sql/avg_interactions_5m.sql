-- Average interactions per user and per item in each 5-minute window
-- (interactions / distinct users, interactions / distinct items).
SELECT
    window(timestamp, '5 minutes') AS window,
    COUNT(*) AS interactions,
    COUNT(DISTINCT user_id) AS users,
    COUNT(DISTINCT item_id) AS items,
    CAST(COUNT(*) AS DOUBLE) / COUNT(DISTINCT user_id) AS avg_interactions_per_user,
    CAST(COUNT(*) AS DOUBLE) / COUNT(DISTINCT item_id) AS avg_interactions_per_item
FROM SOURCE
GROUP BY window(timestamp, '5 minutes')
