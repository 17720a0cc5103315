-- error: between two aggregations cannot run incrementally yet
SELECT AVG(rank) AS avg_rank
FROM (SELECT item_id, ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC) AS rank FROM SOURCE GROUP BY item_id) AS ranked
