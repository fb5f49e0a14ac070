-- messages.session_id loses its foreign key, as sender_id never had one:
-- the store's one writer of messages (the group commit) inserts a message
-- only for a session it has just read under that session's row lock, and
-- sessions are never deleted. The key's check cost a trigger call per
-- inserted message on the hottest write path. (session_id, seq) and
-- (session_id, client_msg_id) stay unique.
ALTER TABLE messages DROP CONSTRAINT messages_session_id_fkey;
