-- Hopping windows of 10 s every 2 s, aligned to the epoch: each bid counts in the 5 windows
-- starting at its 2-second slot and the 4 slots before.
SELECT auction, count(*) AS num, window_start
FROM (
    SELECT auction, time_bucket(INTERVAL '2 seconds', date_time) - k * INTERVAL '2 seconds' AS window_start
    FROM ${SOURCE}, range(5) AS r(k)
)
GROUP BY auction, window_start
