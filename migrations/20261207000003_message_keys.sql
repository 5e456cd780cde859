-- The claims of keyed messages (those with an Idempotency-Key) being stored: an insert claims its id for the
-- hour it runs in and the next one, under a primary key, before it stores the row. Two inserts of one id that
-- run at once (a client's retry and the original, on two writers or two consumer pods) always claim a common
-- hour, so the second waits for the first and then stores nothing. An insert that comes after the first
-- committed finds the stored row. This is what keeps a keyed message stored once when `messages` is
-- partitioned by `received_at` (RETENTION), where a retry's new `received_at` escapes the table's own key.
-- Claims are only needed while their inserts run: whole hours of them are dropped an hour later.
CREATE TABLE IF NOT EXISTS message_keys (
    id     uuid   NOT NULL,
    -- Hours since the Unix epoch.
    period bigint NOT NULL,
    PRIMARY KEY (id, period)
) PARTITION BY RANGE (period);

-- Claims for an hour whose partition the consumer has not made yet.
CREATE TABLE IF NOT EXISTS message_keys_default PARTITION OF message_keys DEFAULT;
