-- error: no_such_column
SELECT no_such_column, COUNT(*) FROM SOURCE GROUP BY no_such_column
