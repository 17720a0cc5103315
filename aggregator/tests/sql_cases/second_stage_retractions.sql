-- A second stage whose groups gain and lose rows as stage 1's counts grow: users per
-- (item, count), then per count how many (item, user) pairs have it. As a pair's count
-- goes from n to n + 1 its row leaves group n (retracted) and joins group n + 1; a group
-- left empty is deleted, and HAVING drops groups with a single pair.
SELECT item_id, user_id, COUNT(*) AS n FROM SOURCE GROUP BY item_id, user_id
-- for_each_batch
SELECT
    n,
    COUNT(*) AS pairs,
    COUNT(DISTINCT item_id) AS items,
    MIN(user_id) AS min_user,
    MAX(user_id) AS max_user,
    SUM(n) AS events,
    AVG(user_id) AS avg_user
FROM AGGREGATED
GROUP BY n
HAVING COUNT(*) > 1
-- end_for
