-- output_mode: complete
SELECT window(timestamp, '5 minutes') AS window, COUNT(*) AS n, AVG(item_id) AS avg_item
FROM SOURCE
GROUP BY window(timestamp, '5 minutes')
