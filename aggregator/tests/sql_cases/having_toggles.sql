-- A HAVING that groups enter and leave as they grow: leaving groups must be deleted.
SELECT item_id, COUNT(*) AS n
FROM SOURCE
GROUP BY item_id
HAVING COUNT(*) % 2 = 0
