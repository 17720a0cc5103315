-- error: output_mode "sometimes"
-- output_mode: sometimes
SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id
