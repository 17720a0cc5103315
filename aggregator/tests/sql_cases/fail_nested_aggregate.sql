-- error: may aggregate only once
SELECT AVG(n) FROM (SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id) AS per_item
