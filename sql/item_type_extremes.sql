-- The most and the least frequent interaction type of each item (ties go to the
-- type that sorts first), ranked with ROW_NUMBER over the per-item counts.
-- key: item_id
SELECT item_id, interaction_type, COUNT(*) AS interaction_count
FROM SOURCE
GROUP BY item_id, interaction_type
-- for_each_batch
SELECT
    item_id,
    MAX(CASE WHEN most = 1 THEN interaction_type END) AS most_frequent_type,
    MAX(CASE WHEN least = 1 THEN interaction_type END) AS least_frequent_type
FROM (
    SELECT
        item_id,
        interaction_type,
        ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY interaction_count DESC, interaction_type) AS most,
        ROW_NUMBER() OVER (PARTITION BY item_id ORDER BY interaction_count ASC, interaction_type) AS least
    FROM AGGREGATED
) AS ranked
GROUP BY item_id
-- end_for
