-- The bids of `generator --dataset bids` (Nexmark's bid fields, flat); watermark 4 s behind, as Nexmark's.
CREATE TABLE bid (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    channel STRING,
    url STRING,
    date_time TIMESTAMP(3),
    extra STRING,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
    'connector' = 'filesystem',
    'path' = '${PATH}',
    'format' = 'json',
    'json.timestamp-format.standard' = 'ISO-8601'
)
