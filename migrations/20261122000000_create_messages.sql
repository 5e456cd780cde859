-- Every message accepted by the publisher, stored once.
CREATE TABLE IF NOT EXISTS messages (
    -- Assigned by the publisher (UUIDv7, or v5 from an Idempotency-Key): a redelivery hits the same key.
    id                 uuid        PRIMARY KEY,
    sender             text        NOT NULL CHECK (char_length(sender) BETWEEN 1 AND 256),
    ts                 text        CHECK (char_length(ts) <= 64),
    message_attributes jsonb       NOT NULL DEFAULT '{}'::jsonb,
    sent_from_ip       inet,
    priority           smallint    NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    received_at        timestamptz NOT NULL,
    stored_at          timestamptz NOT NULL DEFAULT now()
);

-- Keyset pagination, newest first: GET /message and GET /message?before=...
CREATE INDEX IF NOT EXISTS messages_newest_first
    ON messages (received_at DESC, id DESC);

-- The same, filtered by sender: GET /message?sender=...
CREATE INDEX IF NOT EXISTS messages_by_sender_newest_first
    ON messages (sender, received_at DESC, id DESC);
