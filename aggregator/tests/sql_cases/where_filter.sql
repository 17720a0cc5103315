-- A WHERE before the aggregation, and an expression over aggregates.
SELECT user_id, COUNT(*) AS purchases, SUM(item_id) * 1.0 / COUNT(*) AS mean_item
FROM SOURCE
WHERE interaction_type = 'purchase'
GROUP BY user_id
