-- Top-N per window: the two items with the most interactions in each 5-minute window
-- (ties to the lower item_id), ranked with ROW_NUMBER over stage 1's result. When an
-- item overtakes another, its rank and the other's change, and an item that drops out
-- of the first two is deleted.
SELECT window(timestamp, '5 minutes') AS window, item_id, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '5 minutes'), item_id
-- for_each_batch
SELECT window, item_id, n, rank
FROM (
    SELECT window, item_id, n, ROW_NUMBER() OVER (PARTITION BY window ORDER BY n DESC, item_id) AS rank
    FROM AGGREGATED
) AS ranked
WHERE rank <= 2
-- end_for
