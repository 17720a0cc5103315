-- Window functions over a nested aggregate in complete mode: the whole result is
-- rewritten every batch from what the emitter keeps.
-- output_mode: complete
WITH per_user AS (
    SELECT user_id, item_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id, item_id
),
per_item AS (
    SELECT item_id, SUM(n) AS total FROM per_user GROUP BY item_id
)
SELECT item_id, total, RANK() OVER (ORDER BY total DESC) AS place FROM per_item
