-- IO's schema for the single-process mode (`io all` on SQLite); mirrors
-- migrations/postgres table for table.
--
-- Types: ids are 16-byte UUID blobs (ordered like Postgres uuids),
-- timestamps are INTEGER microseconds since the Unix epoch (so they compare
-- and sort as numbers, at Postgres' precision), booleans are 0/1.
-- Every timestamp is bound by the application; none defaults to now.
-- STRICT tables refuse a value of the wrong type instead of storing it.

CREATE TABLE users (
    id           BLOB PRIMARY KEY,
    email        TEXT NOT NULL UNIQUE,
    alias        TEXT NOT NULL,
    -- NULL until onboarding: a user without a gender cannot queue.
    gender       TEXT CHECK (gender IN ('dude', 'girl')),
    -- NULL until chosen: the effective default (the other gender) then
    -- follows `gender` instead of freezing whatever it was at sign-up.
    seeking      TEXT CHECK (seeking IN ('dude', 'girl', 'any')),
    real_name    TEXT,
    details      TEXT,
    reveal_email INTEGER NOT NULL DEFAULT 0,
    is_verified  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    last_active  INTEGER NOT NULL
) STRICT;

CREATE TABLE magic_links (
    token_hash BLOB PRIMARY KEY,
    email      TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX magic_links_expires_at ON magic_links (expires_at);

CREATE TABLE refresh_tokens (
    token_hash BLOB PRIMARY KEY,
    family_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    revoked_at INTEGER
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE chat_sessions (
    id         BLOB PRIMARY KEY,
    user1_id   BLOB NOT NULL REFERENCES users (id),
    user2_id   BLOB NOT NULL REFERENCES users (id),
    status     TEXT NOT NULL CHECK (status IN ('active', 'ended', 'rated')),
    started_at INTEGER NOT NULL,
    ended_at   INTEGER,
    ended_by   BLOB REFERENCES users (id),
    last_seq   INTEGER NOT NULL DEFAULT 0,
    CHECK (user1_id <> user2_id)
) STRICT;
-- The same two people never meet twice, in either order.
CREATE UNIQUE INDEX chat_sessions_pair
    ON chat_sessions (min(user1_id, user2_id), max(user1_id, user2_id));
CREATE UNIQUE INDEX chat_sessions_active_user1 ON chat_sessions (user1_id) WHERE status = 'active';
CREATE UNIQUE INDEX chat_sessions_active_user2 ON chat_sessions (user2_id) WHERE status = 'active';
CREATE INDEX chat_sessions_user1 ON chat_sessions (user1_id, started_at);
CREATE INDEX chat_sessions_user2 ON chat_sessions (user2_id, started_at);

-- sender_id has no foreign key, as in Postgres: the store only accepts a
-- sender who is a participant of the (referenced) session.
CREATE TABLE messages (
    id            BLOB PRIMARY KEY,
    session_id    BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    sender_id     BLOB NOT NULL,
    seq           INTEGER NOT NULL,
    content       TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (session_id, seq),
    UNIQUE (session_id, client_msg_id)
) STRICT;

CREATE TABLE reveal_requests (
    id           BLOB PRIMARY KEY,
    session_id   BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    requester_id BLOB NOT NULL REFERENCES users (id),
    status       TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined')),
    created_at   INTEGER NOT NULL,
    responded_at INTEGER
) STRICT;
CREATE UNIQUE INDEX reveal_requests_one_pending ON reveal_requests (session_id) WHERE status = 'pending';
CREATE INDEX reveal_requests_session ON reveal_requests (session_id, created_at);

CREATE TABLE ratings (
    id         BLOB PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    rater_id   BLOB NOT NULL REFERENCES users (id),
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 4),
    created_at INTEGER NOT NULL,
    UNIQUE (session_id, rater_id)
) STRICT;

CREATE TABLE matcher_fence (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    token INTEGER NOT NULL
) STRICT;
INSERT INTO matcher_fence (id, token) VALUES (1, 0);
