-- output_mode: append
-- allowed_delay: 5 minutes
SELECT window, CONCAT_WS('/', interaction_type, 'all') AS label, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '10 minutes'), interaction_type
