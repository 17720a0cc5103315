-- Tumbling windows with several aggregates; INTERVAL literal for the size.
SELECT tumble(timestamp, INTERVAL '10 minutes') AS window, interaction_type,
       COUNT(*) AS n, SUM(item_id) AS item_sum, MIN(timestamp) AS first_seen, MAX(timestamp) AS last_seen
FROM SOURCE
GROUP BY tumble(timestamp, INTERVAL '10 minutes'), interaction_type
