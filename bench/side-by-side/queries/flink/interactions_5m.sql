CREATE TABLE sink (
    window_start TIMESTAMP(3),
    window_end TIMESTAMP(3),
    user_id BIGINT,
    interaction_type STRING,
    interaction_count BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO sink
SELECT window_start, window_end, user_id, interaction_type, COUNT(*) AS interaction_count
FROM TABLE(TUMBLE(TABLE interactions, DESCRIPTOR(`timestamp`), INTERVAL '5' MINUTE))
GROUP BY window_start, window_end, user_id, interaction_type;
