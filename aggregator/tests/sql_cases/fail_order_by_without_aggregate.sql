-- error: cannot run on a stream without an aggregation
SELECT user_id FROM SOURCE ORDER BY user_id LIMIT 5
