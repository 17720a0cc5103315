-- error: needs an aggregation
-- output_mode: complete
SELECT user_id FROM SOURCE
