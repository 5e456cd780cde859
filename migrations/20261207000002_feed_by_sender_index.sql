-- no-transaction
-- The feed of one sender (GET /message/feed?sender=...), built as the one before it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_feed_by_sender ON messages (sender, xid NULLS FIRST, id);
