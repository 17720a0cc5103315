-- Nexmark's bids, flat: `generator --dataset bids`, one JSON object per line.
-- The event-time column is `date_time` ("2026-01-01T00:00:00.123", UTC).
-- event_time: date_time
CREATE TABLE bid (
    auction BIGINT NOT NULL,
    bidder BIGINT NOT NULL,
    price BIGINT NOT NULL,
    channel VARCHAR NOT NULL,
    url VARCHAR,
    date_time TIMESTAMP NOT NULL,
    extra VARCHAR
);
