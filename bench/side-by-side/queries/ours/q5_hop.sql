-- Nexmark q5 without its join: bids per auction in hopping windows of 10 s every 2 s.
-- allowed_delay: 4 seconds
SELECT
    window(date_time, '10 seconds', '2 seconds') AS window,
    auction,
    COUNT(*) AS num
FROM SOURCE
GROUP BY window(date_time, '10 seconds', '2 seconds'), auction
