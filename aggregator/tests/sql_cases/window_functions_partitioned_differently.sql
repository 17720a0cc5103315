-- Two window functions partitioned differently between two aggregations: no
-- partition holds all the rows a change can move, so the window node is recomputed
-- whole over the rows of its input (a Recompute operator).
SELECT AVG(by_type + overall) AS avg_rank
FROM (
    SELECT item_id, interaction_type,
        ROW_NUMBER() OVER (PARTITION BY interaction_type ORDER BY COUNT(*) DESC) AS by_type,
        ROW_NUMBER() OVER (ORDER BY COUNT(*) DESC, item_id, interaction_type) AS overall
    FROM SOURCE GROUP BY item_id, interaction_type
) AS ranked
