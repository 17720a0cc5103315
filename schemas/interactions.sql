-- The default source: user interactions, one JSON object per message.
-- The event-time column is the first TIMESTAMP column (here `timestamp`);
-- a line `-- event_time: <column>` in this file chooses another one.
-- NOT NULL columns are required: a record without them is a bad record.
CREATE TABLE interactions (
    user_id BIGINT NOT NULL,
    item_id BIGINT NOT NULL,
    interaction_type VARCHAR NOT NULL,
    timestamp TIMESTAMP NOT NULL
);
