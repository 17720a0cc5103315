-- Sessions per bidder: a new session starts after a gap of 10 s or more.
SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, max(date_time) + INTERVAL '10 seconds' AS endtime
FROM (
    SELECT bidder, date_time,
           sum(CASE WHEN gap IS NULL OR gap >= INTERVAL '10 seconds' THEN 1 ELSE 0 END)
               OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS session
    FROM (
        SELECT bidder, date_time, date_time - lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) AS gap
        FROM ${SOURCE}
    )
)
GROUP BY bidder, session
