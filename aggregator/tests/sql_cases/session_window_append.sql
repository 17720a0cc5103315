-- output_mode: append
-- allowed_delay: 3 minutes
-- Sessions per user written once each, when the watermark closes them.
SELECT session(timestamp, '40 seconds') AS window, user_id, COUNT(*) AS n
FROM SOURCE
GROUP BY session(timestamp, '40 seconds'), user_id
