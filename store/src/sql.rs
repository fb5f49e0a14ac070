//! Statements both backends run verbatim: both databases accept `$n`
//! placeholders and the same syntax for these, so they are written once.

use crate::records::{REVEAL_COLS, SESSION_COLS, USER_COLS};

/// The shared profile `UPDATE`: `$1` id, `$2` alias, `$3` gender,
/// `$4` seeking, `$5`/`$6` set/value of the real name, `$7`/`$8` set/value
/// of the details, `$9` reveal_email, `$10` now. A NULL leaves a column as
/// it is; the card texts carry a separate "set" flag because clearing them
/// is a change too.
pub(crate) fn update_profile() -> String {
    format!(
        "UPDATE users SET \
           alias = COALESCE($2, alias), \
           gender = COALESCE($3, gender), \
           seeking = COALESCE($4, seeking), \
           real_name = CASE WHEN $5 THEN $6 ELSE real_name END, \
           details = CASE WHEN $7 THEN $8 ELSE details END, \
           reveal_email = COALESCE($9, reveal_email), \
           last_active = $10 \
         WHERE id = $1 RETURNING {USER_COLS}"
    )
}

/// Creates the user on first sign-in, else marks them active and verified.
/// `$1` new id, `$2` email, `$3` alias, `$4` now.
pub(crate) fn upsert_user() -> String {
    format!(
        "INSERT INTO users (id, email, alias, reveal_email, is_verified, created_at, last_active) \
         VALUES ($1, $2, $3, false, true, $4, $4) \
         ON CONFLICT (email) DO UPDATE \
           SET last_active = excluded.last_active, is_verified = true \
         RETURNING {USER_COLS}"
    )
}

/// Raises the highest fencing token seen, `$1`, unless a higher one was:
/// 0 rows means the caller was deposed. In Postgres it also row-locks the
/// singleton until commit, so concurrent session creations queue here.
pub(crate) const FENCE: &str = "UPDATE matcher_fence SET token = $1 WHERE id = 1 AND token <= $1";

/// `$1` token hash, `$2` user, `$3` now.
pub(crate) const REVOKE_FAMILY_OF_TOKEN: &str = "UPDATE refresh_tokens SET revoked_at = $3 \
     WHERE family_id = (SELECT family_id FROM refresh_tokens \
                        WHERE token_hash = $1 AND user_id = $2) \
       AND revoked_at IS NULL";

/// `$1` family, `$2` now.
pub(crate) const REVOKE_FAMILY: &str =
    "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL";

/// `$1` user, `$2` now.
pub(crate) const REVOKE_USER: &str =
    "UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL";

/// `$1` old hash, `$2` now.
pub(crate) const SPEND_REFRESH: &str =
    "UPDATE refresh_tokens SET used_at = COALESCE(used_at, $2) WHERE token_hash = $1";

/// `$1` hash, `$2` family, `$3` user, `$4` expires, `$5` now.
pub(crate) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens \
       (token_hash, family_id, user_id, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5)";

/// [`INSERT_REFRESH`] for a rotation: a successor already stored (the same
/// token rotated again within its grace) stays as it is.
pub(crate) const INSERT_SUCCESSOR: &str = "INSERT INTO refresh_tokens \
       (token_hash, family_id, user_id, expires_at, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_hash) DO NOTHING";

/// The user's active session first, else their most recent one, with
/// whether they rated it. `$1` user.
pub(crate) fn current_session() -> String {
    format!(
        "SELECT {SESSION_COLS}, \
           EXISTS (SELECT 1 FROM ratings r WHERE r.session_id = s.id AND r.rater_id = $1) \
             AS rated_by_me \
         FROM chat_sessions s WHERE s.user1_id = $1 OR s.user2_id = $1 \
         ORDER BY (s.status = 'active') DESC, s.started_at DESC, s.id DESC LIMIT 1"
    )
}

/// [`current_session`] for every user of `$1` (uuid[]), one index probe
/// each; rows carry `for_user` and only users with a session have one.
pub(crate) fn current_sessions() -> String {
    format!(
        "SELECT k.id AS for_user, s.* FROM UNNEST($1::uuid[]) AS k (id) \
         CROSS JOIN LATERAL (\
           SELECT {SESSION_COLS}, \
             EXISTS (SELECT 1 FROM ratings r WHERE r.session_id = s.id AND r.rater_id = k.id) \
               AS rated_by_me \
           FROM chat_sessions s WHERE s.user1_id = k.id OR s.user2_id = k.id \
           ORDER BY (s.status = 'active') DESC, s.started_at DESC, s.id DESC LIMIT 1) s"
    )
}

/// Ends an active session by one of its participants. `$1` session,
/// `$2` user, `$3` now.
pub(crate) fn end_session() -> String {
    format!(
        "UPDATE chat_sessions SET status = 'ended', ended_at = $3, ended_by = $2 \
         WHERE id = $1 AND status = 'active' AND (user1_id = $2 OR user2_id = $2) \
         RETURNING {SESSION_COLS}"
    )
}

/// Answers the session's pending request if the responder is its other
/// participant. `$1` session, `$2` responder, `$3` new status, `$4` now.
pub(crate) fn respond_reveal() -> String {
    format!(
        "UPDATE reveal_requests SET status = $3, responded_at = $4 \
         WHERE session_id = $1 AND status = 'pending' AND requester_id <> $2 \
           AND EXISTS (SELECT 1 FROM chat_sessions s \
                       WHERE s.id = $1 AND (s.user1_id = $2 OR s.user2_id = $2)) \
         RETURNING {REVEAL_COLS}"
    )
}

/// `$1` session.
pub(crate) fn latest_reveal() -> String {
    format!(
        "SELECT {REVEAL_COLS} FROM reveal_requests WHERE session_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1"
    )
}

/// An open (pending or accepted) request of session `$1`.
pub(crate) const OPEN_REVEAL: &str = "SELECT status FROM reveal_requests \
     WHERE session_id = $1 AND status IN ('pending', 'accepted') LIMIT 1";

/// `$1` id, `$2` session, `$3` requester, `$4` now.
pub(crate) const INSERT_REVEAL: &str =
    "INSERT INTO reveal_requests (id, session_id, requester_id, status, created_at) \
     VALUES ($1, $2, $3, 'pending', $4)";

/// `$1` id, `$2` session, `$3` rater, `$4` rating, `$5` now; inserts
/// nothing if this rater already rated.
pub(crate) const INSERT_RATING: &str =
    "INSERT INTO ratings (id, session_id, rater_id, rating, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id, rater_id) DO NOTHING";

/// `$1` session.
pub(crate) const COUNT_RATINGS: &str = "SELECT count(*) AS n FROM ratings WHERE session_id = $1";

/// `$1` session.
pub(crate) const MARK_RATED: &str = "UPDATE chat_sessions SET status = 'rated' WHERE id = $1";
