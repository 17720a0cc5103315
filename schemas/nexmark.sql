-- Nexmark's single-topic layout: `generator --dataset nexmark`, one JSON object per line,
-- `event_type` 0 (a person), 1 (an auction) or 2 (a bid), the other two objects null.
-- Nested objects are STRUCT columns (`bid.price`, `person.city`, ...). The event-time
-- column must be a top-level column, and here the times are nested: this declaration has
-- none, so windows (and watermarks) do not apply; use schemas/nexmark_bids.sql for
-- windowed queries over bids.
CREATE TABLE nexmark (
    event_type INT NOT NULL,
    person STRUCT<
        id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
        city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR>,
    auction STRUCT<
        id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT,
        date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR>,
    bid STRUCT<
        auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
        date_time TIMESTAMP, extra VARCHAR>
);
