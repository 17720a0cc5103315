-- Hopping windows with an aggregate whose state is a set (COUNT DISTINCT): the events
-- themselves are spread over their windows, not per-pane partial states.
-- allowed_delay: 3 minutes
SELECT window(timestamp, '6 minutes', '2 minutes') AS window, user_id % 3 AS user_group,
       COUNT(DISTINCT item_id) AS items, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '6 minutes', '2 minutes'), user_id % 3
