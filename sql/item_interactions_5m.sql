-- Interactions per item and interaction type in 5-minute event-time windows.
SELECT
    window(timestamp, '5 minutes') AS window,
    item_id,
    interaction_type,
    COUNT(*) AS interaction_count
FROM SOURCE
GROUP BY window(timestamp, '5 minutes'), item_id, interaction_type
