-- A window function without PARTITION BY between two aggregations: the ranks of all
-- items are one partition, recomputed whole each batch, then averaged per kind of rank.
SELECT top_half, COUNT(*) AS items, AVG(n) AS avg_n
FROM (
    SELECT item_id, COUNT(*) AS n, ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC, item_id) <= 3 AS top_half
    FROM SOURCE
    GROUP BY item_id
) AS ranked
GROUP BY top_half
