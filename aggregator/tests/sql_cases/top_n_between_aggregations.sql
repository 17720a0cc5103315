-- ORDER BY … LIMIT between two aggregations: the three busiest items, then how many
-- events they have together and the least of them.
SELECT COUNT(*) AS items, SUM(n) AS events, MIN(n) AS least
FROM (
    SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id ORDER BY n DESC, item_id LIMIT 3
) AS busiest
