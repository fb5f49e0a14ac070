-- A clientMsgId is its sender's retry key: both participants may use the
-- same one (clients that number their messages 1, 2, 3…), each for their
-- own message. The group commit's duplicate check probes this index.
ALTER TABLE messages
    DROP CONSTRAINT messages_session_client_msg_id,
    ADD CONSTRAINT messages_session_sender_client_msg_id
        UNIQUE (session_id, sender_id, client_msg_id);
