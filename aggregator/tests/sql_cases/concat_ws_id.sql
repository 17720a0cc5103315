-- A composite key written by the query as _id with CONCAT_WS.
SELECT CONCAT_WS('-', CAST(item_id AS VARCHAR), interaction_type) AS _id, item_id, interaction_type, COUNT(*) AS n
FROM SOURCE
GROUP BY item_id, interaction_type
