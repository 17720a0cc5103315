-- output_mode: update
SELECT window(timestamp, '5 minutes') AS window, user_id, interaction_type, COUNT(*) AS interaction_count
FROM interactions
GROUP BY window(timestamp, '5 minutes'), user_id, interaction_type
