-- error: a scalar subquery cannot run on a stream yet
SELECT item_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id
-- for_each_batch
SELECT item_id, n - (SELECT AVG(n) FROM AGGREGATED) AS above_average FROM AGGREGATED
-- end_for
