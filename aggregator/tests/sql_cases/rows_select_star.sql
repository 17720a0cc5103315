-- SELECT * over SOURCE: the declared columns, none of the internal ones.
SELECT * FROM SOURCE WHERE user_id % 3 = 0
