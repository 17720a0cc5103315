-- UNION ALL without aggregation: a record can give two rows (`_id` …#2 for the second).
SELECT user_id, 'item' AS kind, item_id AS value FROM SOURCE WHERE interaction_type <> 'view'
UNION ALL
SELECT user_id, 'user' AS kind, user_id AS value FROM SOURCE
