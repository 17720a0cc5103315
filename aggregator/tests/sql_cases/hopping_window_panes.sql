-- Hopping windows whose size is not a multiple of the slide (panes of 2 minutes), with
-- a short delay so that some events arrive after a few of their windows have closed
-- and count only in the rest. Several aggregates, one with a FILTER.
-- allowed_delay: 3 minutes
SELECT hop(timestamp, '10 minutes', '4 minutes') AS window, interaction_type,
       COUNT(*) AS n,
       SUM(item_id) FILTER (WHERE user_id % 2 = 0) AS even_users_items,
       MIN(timestamp) AS first_seen, MAX(user_id) AS top_user, AVG(item_id) AS mean_item
FROM SOURCE
GROUP BY hop(timestamp, '10 minutes', '4 minutes'), interaction_type
