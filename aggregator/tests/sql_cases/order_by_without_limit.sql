-- ORDER BY without LIMIT over an aggregation: a result table has no order, so the
-- sort is dropped and the groups are written as they change.
SELECT user_id, COUNT(*) AS n FROM SOURCE GROUP BY user_id ORDER BY n DESC
