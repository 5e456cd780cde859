-- The transaction that stored each row, for the feed (GET /message/feed): rows are served in the order of
-- (xid, id), and only up to the oldest transaction still running, so a row committed later always comes
-- after every row already served. The column is added without a default first and the default set after,
-- so neither step rewrites the table: rows stored before this migration keep a NULL, and the feed serves
-- them first. Earlier releases insert without naming the column, and get the default too.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS xid xid8;
ALTER TABLE messages ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
