-- Distinct counts: exact (state is the set of values) and HyperLogLog.
SELECT interaction_type, COUNT(DISTINCT user_id) AS users, approx_count_distinct(user_id) AS approx_users
FROM SOURCE
GROUP BY interaction_type
