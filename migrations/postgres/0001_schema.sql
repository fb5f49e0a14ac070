-- IO's system of record (design 3.5). The SQLite schema in
-- migrations/sqlite mirrors this one table for table.
--
-- No column defaults to now(): every timestamp is bound by the application,
-- so Postgres and SQLite store exactly the same instants.

CREATE TABLE users (
    id           uuid PRIMARY KEY,
    email        text NOT NULL UNIQUE,
    alias        text NOT NULL,
    -- NULL until onboarding: a user without a gender cannot queue.
    gender       text CHECK (gender IN ('dude', 'girl')),
    -- NULL until chosen: the effective default (the other gender) then
    -- follows `gender` instead of freezing whatever it was at sign-up.
    seeking      text CHECK (seeking IN ('dude', 'girl', 'any')),
    -- The identity card, shown only after a mutual reveal.
    real_name    text,
    details      text,
    reveal_email boolean NOT NULL DEFAULT false,
    is_verified  boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL,
    last_active  timestamptz NOT NULL
);

-- Magic links are kept only as SHA-256 hashes and deleted when spent.
CREATE TABLE magic_links (
    token_hash bytea PRIMARY KEY,
    email      text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
-- Lets the sweep of unspent, expired links find them without a scan.
CREATE INDEX magic_links_expires_at ON magic_links (expires_at);

-- Every rotation of one sign-in shares a family, so presenting a spent
-- token again can revoke the whole chain.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- `last_seq` is bumped by every message batch: free space on each page
-- keeps those updates HOT (no index writes).
CREATE TABLE chat_sessions (
    id         uuid PRIMARY KEY,
    user1_id   uuid NOT NULL REFERENCES users (id),
    user2_id   uuid NOT NULL REFERENCES users (id),
    status     text NOT NULL CHECK (status IN ('active', 'ended', 'rated')),
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    ended_by   uuid REFERENCES users (id),
    -- The highest message seq committed; the next message gets last_seq + 1.
    last_seq   bigint NOT NULL DEFAULT 0,
    CHECK (user1_id <> user2_id)
) WITH (fillfactor = 80);
-- The same two people never meet twice, in either order.
CREATE UNIQUE INDEX chat_sessions_pair
    ON chat_sessions (LEAST(user1_id, user2_id), GREATEST(user1_id, user2_id));
-- A user is in at most one active session per side; these also answer
-- "is this user busy" for the matcher.
CREATE UNIQUE INDEX chat_sessions_active_user1 ON chat_sessions (user1_id) WHERE status = 'active';
CREATE UNIQUE INDEX chat_sessions_active_user2 ON chat_sessions (user2_id) WHERE status = 'active';
-- A user's sessions, newest last: current session and past partners.
CREATE INDEX chat_sessions_user1 ON chat_sessions (user1_id, started_at);
CREATE INDEX chat_sessions_user2 ON chat_sessions (user2_id, started_at);

-- sender_id has no foreign key on purpose: the store only accepts a sender
-- who is a participant of the (referenced) session, and a per-row key-share
-- lock on the sender's users row would tax the group-commit hot path.
CREATE TABLE messages (
    id            uuid PRIMARY KEY,
    session_id    uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    sender_id     uuid NOT NULL,
    seq           bigint NOT NULL,
    content       text NOT NULL,
    client_msg_id text NOT NULL,
    created_at    timestamptz NOT NULL,
    CONSTRAINT messages_session_seq UNIQUE (session_id, seq),
    CONSTRAINT messages_session_client_msg_id UNIQUE (session_id, client_msg_id)
);

CREATE TABLE reveal_requests (
    id           uuid PRIMARY KEY,
    session_id   uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    requester_id uuid NOT NULL REFERENCES users (id),
    status       text NOT NULL CHECK (status IN ('pending', 'accepted', 'declined')),
    created_at   timestamptz NOT NULL,
    responded_at timestamptz
);
-- At most one pending request per session.
CREATE UNIQUE INDEX reveal_requests_one_pending ON reveal_requests (session_id) WHERE status = 'pending';
CREATE INDEX reveal_requests_session ON reveal_requests (session_id, created_at);

CREATE TABLE ratings (
    id         uuid PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    rater_id   uuid NOT NULL REFERENCES users (id),
    rating     smallint NOT NULL CHECK (rating BETWEEN 1 AND 4),
    created_at timestamptz NOT NULL,
    CONSTRAINT ratings_once UNIQUE (session_id, rater_id)
);

-- The highest matcher fencing token seen. Session creation raises it under
-- a row lock, so a deposed leader's write is refused and session creation
-- is serialized.
CREATE TABLE matcher_fence (
    id    smallint PRIMARY KEY CHECK (id = 1),
    token bigint NOT NULL
);
INSERT INTO matcher_fence (id, token) VALUES (1, 0);
