-- no-transaction
-- The feed's order, built without blocking writes (one statement: CONCURRENTLY cannot share a transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_feed ON messages (xid NULLS FIRST, id);
