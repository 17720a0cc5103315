-- Aggregates with FILTER: a group whose rows the FILTER all excludes has NULL sums,
-- minimums and averages (and a count of 0), also when it first appears in a
-- micro-batch together with groups held from earlier ones.
SELECT tumble(timestamp, '10 minutes') AS window, item_id,
       SUM(user_id) FILTER (WHERE interaction_type <> 'view') AS non_view_users,
       MIN(user_id) FILTER (WHERE interaction_type <> 'view') AS first_non_viewer,
       AVG(user_id) FILTER (WHERE interaction_type <> 'view') AS mean_non_viewer,
       COUNT(*) FILTER (WHERE interaction_type <> 'view') AS non_views
FROM SOURCE
GROUP BY tumble(timestamp, '10 minutes'), item_id
