-- messageAttributes is kept as the JSON text the client sent: `json` validates it but keeps every number's
-- digits and every key as written, where `jsonb` would rewrite `1E2` as `100` and keep one of two equal keys.
ALTER TABLE messages ALTER COLUMN message_attributes DROP DEFAULT;
ALTER TABLE messages ALTER COLUMN message_attributes TYPE json USING message_attributes::json;
ALTER TABLE messages ALTER COLUMN message_attributes SET DEFAULT '{}'::json;

-- SHA-256 of a keyed message's content, to tell a retry from an Idempotency-Key reused for another message.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS fingerprint text;
