-- Nexmark q11: bids per bidder session (sessions end after a 10-second gap).
-- allowed_delay: 4 seconds
SELECT
    bidder,
    COUNT(*) AS bid_count,
    session_window(date_time, '10 seconds') AS window
FROM SOURCE
GROUP BY bidder, session_window(date_time, '10 seconds')
