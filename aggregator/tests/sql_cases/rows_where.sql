-- A query without aggregation: every purchase as a row of the result, with an
-- expression; each row is upserted under the location of its record.
SELECT user_id, item_id, timestamp, item_id * 2 AS item_twice
FROM SOURCE
WHERE interaction_type = 'purchase'
