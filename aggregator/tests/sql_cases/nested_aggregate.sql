-- An aggregate of an aggregate in plain SQL (a subquery): the average number of
-- interactions per item, with HAVING, CASE and FILTER at both levels.
SELECT
    'all' AS _id,
    AVG(n) AS avg_per_item,
    COUNT(*) FILTER (WHERE n > 2) AS busy_items,
    MAX(CASE WHEN views > 0 THEN n END) AS most_with_views
FROM (
    SELECT item_id, COUNT(*) AS n, COUNT(*) FILTER (WHERE interaction_type = 'view') AS views
    FROM SOURCE
    GROUP BY item_id
    HAVING COUNT(*) > 1
) AS per_item
