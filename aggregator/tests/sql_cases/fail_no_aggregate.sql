-- error: must aggregate
SELECT user_id FROM SOURCE
