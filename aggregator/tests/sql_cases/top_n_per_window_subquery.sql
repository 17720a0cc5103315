-- Top-N per window in one query: the item with the most interactions in each
-- 5-minute window, ranked in a subquery over the GROUP BY.
SELECT window, item_id, n
FROM (
    SELECT
        window(timestamp, '5 minutes') AS window,
        item_id,
        COUNT(*) AS n,
        ROW_NUMBER() OVER (PARTITION BY window(timestamp, '5 minutes') ORDER BY COUNT(*) DESC, item_id) AS rank
    FROM SOURCE
    GROUP BY window(timestamp, '5 minutes'), item_id
) AS ranked
WHERE rank = 1
