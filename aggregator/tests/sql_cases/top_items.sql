-- ORDER BY ... LIMIT over the groups: an incremental top-N over their changes, keyed by item.
SELECT item_id, COUNT(*) AS n
FROM SOURCE
GROUP BY item_id
ORDER BY n DESC, item_id
LIMIT 5
