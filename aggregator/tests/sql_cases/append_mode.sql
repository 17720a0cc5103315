-- output_mode: append
-- allowed_delay: 2 minutes
SELECT window(timestamp, '2 minutes') AS window, interaction_type, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '2 minutes'), interaction_type
