-- error: Expected
SELEC item_id FROM SOURCE GROUP BY item_id
