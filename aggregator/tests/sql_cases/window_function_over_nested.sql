-- A window function without PARTITION BY over an aggregate of an aggregate: the last
-- level's rows are one partition, ranked again whenever one of them changes.
WITH per_user AS (
    SELECT user_id, item_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id, item_id
),
per_item AS (
    SELECT item_id, SUM(n) AS total, COUNT(*) AS users FROM per_user GROUP BY item_id
)
SELECT item_id, total, users, RANK() OVER (ORDER BY total DESC) AS place FROM per_item
