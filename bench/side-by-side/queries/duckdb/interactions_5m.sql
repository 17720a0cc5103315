SELECT time_bucket(INTERVAL '5 minutes', timestamp) AS window_start, user_id, interaction_type, COUNT(*) AS interaction_count
FROM ${SOURCE}
GROUP BY window_start, user_id, interaction_type
