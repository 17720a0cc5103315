-- UNION ALL of branches over SOURCE feeding one aggregation: a weighted count per
-- item where a view counts once and a purchase three times (CASE in a branch).
SELECT item_id, SUM(weight) AS score, COUNT(*) AS rows_in
FROM (
    SELECT item_id, 1 AS weight FROM SOURCE WHERE interaction_type = 'view'
    UNION ALL
    SELECT item_id, CASE WHEN interaction_type = 'purchase' THEN 3 ELSE 0 END AS weight
    FROM SOURCE WHERE interaction_type <> 'view'
) AS weighted
GROUP BY item_id
