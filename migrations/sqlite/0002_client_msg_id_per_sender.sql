-- A clientMsgId is its sender's retry key: both participants may use the
-- same one, each for their own message (as in Postgres). SQLite cannot drop
-- a table constraint, so the table is rebuilt.
CREATE TABLE messages_new (
    id            BLOB PRIMARY KEY,
    session_id    BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    sender_id     BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    content       TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (session_id, seq),
    UNIQUE (session_id, sender_id, client_msg_id)
) STRICT;
INSERT INTO messages_new (id, session_id, sender_id, seq, content, client_msg_id, created_at)
    SELECT id, session_id, sender_id, seq, content, client_msg_id, created_at FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
