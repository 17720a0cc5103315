-- error: needs a window
-- output_mode: append
SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id
