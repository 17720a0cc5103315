-- A JOIN of a second stage's aggregation with stage 1's rows (both read AGGREGATED:
-- stage 1 runs once per batch for both) runs as a Recompute operator, recomputed
-- whole over its inputs' current rows each batch. Here: each item's count beside the
-- average count over items.
SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id
-- for_each_batch
SELECT a.item_id, a.n, a.n - b.avg_n AS above_average
FROM AGGREGATED a CROSS JOIN (SELECT AVG(n) AS avg_n FROM AGGREGATED) b
-- end_for
