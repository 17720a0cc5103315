-- Interactions per user and interaction type in 5-minute event-time windows
-- (sql/user_interactions_5m.sql as shipped: update mode, watermark 20 minutes behind).
SELECT
    window(timestamp, '5 minutes') AS window,
    user_id,
    interaction_type,
    COUNT(*) AS interaction_count
FROM SOURCE
GROUP BY window(timestamp, '5 minutes'), user_id, interaction_type
