-- Nexmark q16: channel statistics per day (distinct aggregations with filters, two keys).
-- output_mode: update
-- Structured Streaming refuses COUNT(DISTINCT) ("Distinct aggregations are not supported on streaming DataFrames"): approx_count_distinct instead.
SELECT
    channel,
    date_format(date_time, 'yyyy-MM-dd') AS day,
    max(date_format(date_time, 'HH:mm')) AS minute,
    count(*) AS total_bids,
    count(*) filter (where price < 10000) AS rank1_bids,
    count(*) filter (where price >= 10000 and price < 1000000) AS rank2_bids,
    count(*) filter (where price >= 1000000) AS rank3_bids,
    approx_count_distinct(bidder) AS total_bidders,
    approx_count_distinct(bidder) filter (where price < 10000) AS rank1_bidders,
    approx_count_distinct(bidder) filter (where price >= 10000 and price < 1000000) AS rank2_bidders,
    approx_count_distinct(bidder) filter (where price >= 1000000) AS rank3_bidders,
    approx_count_distinct(auction) AS total_auctions,
    approx_count_distinct(auction) filter (where price < 10000) AS rank1_auctions,
    approx_count_distinct(auction) filter (where price >= 10000 and price < 1000000) AS rank2_auctions,
    approx_count_distinct(auction) filter (where price >= 1000000) AS rank3_auctions
FROM bid
GROUP BY channel, date_format(date_time, 'yyyy-MM-dd')
