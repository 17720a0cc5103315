-- Spark SQL as written for Structured Streaming: the window is selected as `window`,
-- `window.start` and `window.end` after GROUP BY window(...).
SELECT window.start, window.end, interaction_type, COUNT(*) AS n, approx_count_distinct(user_id) AS users
FROM SOURCE
GROUP BY window(timestamp, '5 minutes'), interaction_type
