-- Hopping (sliding) windows, Spark's three-argument form: every event counts in two windows.
SELECT window(timestamp, '10 minutes', '5 minutes') AS window, interaction_type, COUNT(*) AS n
FROM SOURCE
GROUP BY window(timestamp, '10 minutes', '5 minutes'), interaction_type
