-- error: cannot run incrementally yet
SELECT item_id AS id, COUNT(*) AS n FROM SOURCE GROUP BY item_id
UNION ALL
SELECT user_id AS id, COUNT(*) AS n FROM SOURCE GROUP BY user_id
