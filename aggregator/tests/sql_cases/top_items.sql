-- ORDER BY ... LIMIT over the groups: not one row per group, so the whole result is diffed.
SELECT item_id, COUNT(*) AS n
FROM SOURCE
GROUP BY item_id
ORDER BY n DESC, item_id
LIMIT 5
