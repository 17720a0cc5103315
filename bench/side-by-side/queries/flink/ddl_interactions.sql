-- The interactions of `generator` (the default data set); watermark 20 minutes behind, as our default.
CREATE TABLE interactions (
    user_id BIGINT,
    item_id BIGINT,
    interaction_type STRING,
    `timestamp` TIMESTAMP(3),
    WATERMARK FOR `timestamp` AS `timestamp` - INTERVAL '20' MINUTE
) WITH (
    'connector' = 'filesystem',
    'path' = '${PATH}',
    'format' = 'json',
    'json.timestamp-format.standard' = 'ISO-8601'
)
