-- A field of the window struct selected on its own (no plain key column: content ids).
SELECT window(timestamp, '5 minutes')['start'] AS window_start, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '5 minutes')
