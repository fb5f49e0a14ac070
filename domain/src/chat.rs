//! The rules of chat (design 3.4): who may do what to which session, what is
//! stored, and who is told. Both transports call these methods with an
//! authenticated user; they hold no chat rules of their own.
//!
//! Every action tells each socket of each user concerned exactly once: the
//! socket that acted (`Actor::conn`) is skipped on the bus because its
//! transport answers it directly, with the frame's `ref`, from the value the
//! method returns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use io_protocol::*;

use crate::error::{ChatError, ChatResult};
use crate::limits::{ChatLimiters, ChatLimits};
use crate::model::*;
use crate::outbox::{Delivery, Outbox};
use crate::ports::{Bus, Store, StoreError};
use crate::types::*;
use crate::writer::MessageWriter;

/// Who acts: the user, and the socket it came from (if any), which gets the
/// direct answer instead of a copy through the bus.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user: UserId,
    pub conn: Option<ConnRef>,
}

impl Actor {
    pub fn rest(user: UserId) -> Self {
        Actor { user, conn: None }
    }
}

/// How many of the latest messages a session snapshot carries.
pub const SNAPSHOT_MESSAGES: u32 = 50;
/// The largest history page.
pub const MAX_PAGE: u32 = 200;

/// Where a user stands as a socket of theirs connects: what `connected`
/// says, and whom to tell `user_joined`.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub user: User,
    pub session: Option<SessionView>,
    /// The session and partner, if the session is active.
    pub active: Option<(SessionId, UserId)>,
}

/// Reveal requests one participant may make in one session (a first ask,
/// and two more after a decline).
pub const MAX_REVEAL_ASKS: i64 = 3;

/// The chat service of one process.
pub struct Chat {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    writer: MessageWriter,
    outbox: Outbox,
    limiters: ChatLimiters,
    /// What this node last read of each session it served, to keep the
    /// checks of hot events (typing) off the database.
    known: Mutex<HashMap<SessionId, Known>>,
}

/// A session as this node last read it.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The participants, which never change.
    pair: (UserId, UserId),
    /// `Some(t)`: active as of `t`; `None`: ended, for good. Keeps typing
    /// events, which the store never sees, from reaching a former partner.
    active_as_of: Option<Instant>,
}

impl Chat {
    const KNOWN_SESSIONS: usize = 200_000;
    /// How long a session read as active counts as active for typing. An
    /// end on this node is seen at once; one on another node within this.
    const ACTIVE_RECHECK: Duration = Duration::from_secs(5);
    /// Session views one [`Chat::arrivals`] call builds at once.
    const ARRIVAL_VIEWS_AT_ONCE: usize = 8;

    /// Start the chat service (its writer and outbox tasks) on the current
    /// Tokio runtime; message commits start at least `commit_interval`
    /// apart ([`MessageWriter`]).
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        limits: ChatLimits,
        commit_interval: Duration,
    ) -> Arc<Self> {
        Arc::new(Chat {
            writer: MessageWriter::spawn(store.clone(), commit_interval),
            outbox: Outbox::spawn(bus.clone()),
            store,
            bus,
            limiters: ChatLimiters::new(limits),
            known: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.bus
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Forget idle rate-limit keys (called periodically).
    pub fn prune_limiters(&self) {
        self.limiters.prune();
    }

    async fn user(&self, id: UserId) -> ChatResult<User> {
        self.store.user(id).await?.ok_or(ChatError::Unauthorized)
    }

    /// The session, if `me` is one of its two participants; `NOT_FOUND`
    /// for everyone else, so ids cannot be probed.
    async fn my_session(&self, me: UserId, id: SessionId) -> ChatResult<Session> {
        let session = self.store.session(id).await?.ok_or(ChatError::NotFound)?;
        if !session.has(me) {
            return Err(ChatError::NotFound);
        }
        self.remember(&session);
        Ok(session)
    }

    fn remember(&self, s: &Session) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= Self::KNOWN_SESSIONS {
            known.clear();
        }
        let active_as_of = (s.status == SessionStatus::Active).then(Instant::now);
        known
            .entry(s.id)
            // Ended is for good: a read that began before an end on this
            // node must not make the session active again.
            .and_modify(|k| {
                if k.active_as_of.is_some() {
                    k.active_as_of = active_as_of;
                }
            })
            .or_insert(Known {
                pair: (s.user1, s.user2),
                active_as_of,
            });
    }

    fn known(&self, id: SessionId) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .copied()
    }

    /// The partner of `me` in session `id`, from the cache when possible.
    async fn partner_in(&self, me: UserId, id: SessionId) -> ChatResult<UserId> {
        let (a, b) = match self.known(id) {
            Some(k) => k.pair,
            None => {
                let s = self.my_session(me, id).await?;
                (s.user1, s.user2)
            }
        };
        match (a == me, b == me) {
            (true, _) => Ok(b),
            (_, true) => Ok(a),
            _ => Err(ChatError::NotFound),
        }
    }

    /// `CONFLICT` unless session `id` (of `me`) is active, reading the
    /// store at most every [`Self::ACTIVE_RECHECK`] per session (a read
    /// for any other reason counts too).
    async fn ensure_active(&self, me: UserId, id: SessionId) -> ChatResult<()> {
        let active = match self.known(id).map(|k| k.active_as_of) {
            Some(Some(at)) if at.elapsed() < Self::ACTIVE_RECHECK => true,
            Some(None) => false,
            _ => self.my_session(me, id).await?.status == SessionStatus::Active,
        };
        if active {
            Ok(())
        } else {
            Err(ChatError::Conflict("the session is not active"))
        }
    }

    async fn notify(&self, deliveries: Vec<Delivery>, skip: Option<ConnRef>) -> ChatResult<()> {
        Ok(self.outbox.send(deliveries, skip).await?)
    }

    // --- views -------------------------------------------------------------

    pub fn user_view(user: &User) -> UserView {
        UserView {
            id: user.id.0,
            email: user.email.to_string(),
            alias: user.alias.to_string(),
            gender: user.gender.map(|g| g.as_str().to_owned()),
            seeking: user.seeking.as_str().to_owned(),
            created_at: user.created_at,
        }
    }

    pub fn profile_view(user: &User) -> ProfileView {
        ProfileView {
            id: user.id.0,
            email: user.email.to_string(),
            alias: user.alias.to_string(),
            gender: user.gender.map(|g| g.as_str().to_owned()),
            seeking: user.seeking.as_str().to_owned(),
            real_name: user.real_name.as_ref().map(|t| t.as_str().to_owned()),
            details: user.details.as_ref().map(|t| t.as_str().to_owned()),
            reveal_email: user.reveal_email,
            created_at: user.created_at,
        }
    }

    fn partner_view(user: &User) -> PartnerView {
        PartnerView {
            alias: user.alias.to_string(),
            gender: user.gender.map(|g| g.as_str().to_owned()),
        }
    }

    fn card(user: &User) -> IdentityCard {
        IdentityCard {
            alias: user.alias.to_string(),
            real_name: user.real_name.as_ref().map(|t| t.as_str().to_owned()),
            details: user.details.as_ref().map(|t| t.as_str().to_owned()),
            email: user.reveal_email.then(|| user.email.to_string()),
        }
    }

    fn identities(me: &User, partner: &User) -> Identities {
        Identities {
            me: Self::card(me),
            partner: Self::card(partner),
        }
    }

    pub fn message_view(m: &Message, me: UserId) -> MessageView {
        MessageView {
            id: m.id.0,
            session_id: m.session_id.0,
            seq: m.seq,
            content: m.content.clone(),
            created_at: m.created_at,
            client_msg_id: m.client_msg_id.clone(),
            is_me: m.sender_id == me,
        }
    }

    /// `me` or `partner`: whose doing something was, as `viewer` sees it.
    fn side(who: UserId, viewer: UserId) -> String {
        if who == viewer { "me" } else { "partner" }.into()
    }

    fn reveal_view(
        reveal: Option<&RevealRequest>,
        me: UserId,
        asks_left: Option<u8>,
    ) -> RevealView {
        match reveal {
            None => RevealView {
                state: "none".into(),
                requested_by: None,
                asks_left: None,
            },
            Some(r) => RevealView {
                state: r.status.as_str().into(),
                requested_by: Some(Self::side(r.requester_id, me)),
                asks_left,
            },
        }
    }

    fn reveal_request_view(
        r: &RevealRequest,
        me: UserId,
        ids: Option<Identities>,
    ) -> RevealRequestView {
        RevealRequestView {
            id: r.id.0,
            session_id: r.session_id.0,
            status: r.status.as_str().into(),
            requested_by: Self::side(r.requester_id, me),
            created_at: r.created_at,
            identities: ids,
        }
    }

    /// The session as `me` sees it: partner by alias and gender only, and
    /// identity cards only after a mutual reveal.
    pub async fn session_view(
        &self,
        s: &Session,
        me: UserId,
        with_messages: bool,
    ) -> ChatResult<SessionView> {
        let partner_id = s.partner_of(me).ok_or(ChatError::NotFound)?;
        let (me_user, partner) = (self.user(me).await?, self.user(partner_id).await?);
        let reveal = self.store.latest_reveal(s.id).await?;
        let my_rating = self.store.rating_of(s.id, me).await?;
        let identities = match &reveal {
            Some(r) if r.status == RevealStatus::Accepted => {
                Some(Self::identities(&me_user, &partner))
            }
            _ => None,
        };
        let messages = if with_messages {
            let ms = self.store.latest_messages(s.id, SNAPSHOT_MESSAGES).await?;
            Some(ms.iter().map(|m| Self::message_view(m, me)).collect())
        } else {
            None
        };
        // Counted only where it decides something: whether "ask again" is
        // still open to the one who asked last (waiting, or declined).
        let asks_left = match &reveal {
            Some(r)
                if s.status == SessionStatus::Active
                    && r.status != RevealStatus::Accepted
                    && r.requester_id == me =>
            {
                let asked = self.store.reveal_requests_by(s.id, me).await?;
                Some((MAX_REVEAL_ASKS - asked).clamp(0, 2) as u8)
            }
            _ => None,
        };
        Ok(SessionView {
            id: s.id.0,
            status: s.status.as_str().into(),
            started_at: s.started_at,
            ended_at: s.ended_at,
            ended_by: s.ended_by.map(|by| Self::side(by, me)),
            partner: Self::partner_view(&partner),
            // Filled in by the reads that tell where a user stands.
            partner_online: None,
            reveal: Self::reveal_view(reveal.as_ref(), me, asks_left),
            my_rating: my_rating.map(|r| r.rating.get()),
            identities,
            messages,
        })
    }

    // --- reads ---------------------------------------------------------------

    /// The signed-in user (for `connected` and `/me`).
    pub async fn me(&self, me: UserId) -> ChatResult<User> {
        self.user(me).await
    }

    /// Change the user's profile. A user who is searching while their
    /// gender or what they seek changes has their queue entry replaced with
    /// the new profile in one step (their wait starts over), so a pairing
    /// round after the change pairs them as they now are. The profile is
    /// saved either way: if Redis fails that step, the search goes on with
    /// the old entry (logged and counted) rather than the save failing.
    pub async fn update_profile(&self, me: UserId, update: &ProfileUpdate) -> ChatResult<User> {
        let before = self.user(me).await?;
        let user = self
            .store
            .update_profile(me, update, Utc::now())
            .await?
            .ok_or(ChatError::Unauthorized)?;
        let Some(gender) = user.gender else {
            return Ok(user);
        };
        if (before.gender, before.seeking) != (user.gender, user.seeking) {
            let entry = QueueEntry {
                user: me,
                gender,
                seeking: user.seeking,
                joined_at_ms: Utc::now().timestamp_millis(),
            };
            if let Err(e) = self.bus.queue_replace(&entry).await {
                metrics::counter!("io_queue_replace_failures_total").increment(1);
                tracing::warn!(error = %e, user = %me, "could not requeue a searcher with their new profile");
            }
        }
        Ok(user)
    }

    /// [`Chat::me`] and [`Chat::current_session`] for many users at once
    /// (a storm of connects, or of reconnects after a node drained): one
    /// read of the users and one of their current sessions for the whole
    /// batch; only users who have a session need reads of their own, a
    /// few at a time. One answer per user, in input order.
    pub async fn arrivals(&self, users: &[UserId]) -> ChatResult<Vec<ChatResult<Arrival>>> {
        let (found, sessions) =
            tokio::try_join!(self.store.users(users), self.store.current_sessions(users))?;
        let found: HashMap<UserId, User> = found.into_iter().map(|u| (u.id, u)).collect();
        let ids: Vec<UserId> = users.to_vec();
        let answers = ids.into_iter().zip(sessions).map(|(id, session)| {
            let user = found.get(&id).cloned();
            async move {
                let user = user.ok_or(ChatError::Unauthorized)?;
                let Some(s) = session else {
                    return Ok(Arrival {
                        user,
                        session: None,
                        active: None,
                    });
                };
                self.remember(&s);
                let active = match (s.status, s.partner_of(id)) {
                    (SessionStatus::Active, Some(partner)) => Some((s.id, partner)),
                    _ => None,
                };
                Ok(Arrival {
                    session: Some(self.session_view(&s, id, true).await?),
                    user,
                    active,
                })
            }
        });
        // Side by side, but not all at once: each view is a few reads, and
        // a reconnect storm must leave the pool room for the group commit.
        use futures::StreamExt;
        let mut answers: Vec<ChatResult<Arrival>> = futures::stream::iter(answers)
            .buffered(Self::ARRIVAL_VIEWS_AT_ONCE)
            .collect()
            .await;
        // Whether each active session's partner is there, in one read.
        let partners: Vec<UserId> = answers
            .iter()
            .filter_map(|a| a.as_ref().ok()?.active.map(|(_, p)| p))
            .collect();
        let mut online = self.presence_of(&partners).await.into_iter();
        for arrival in answers.iter_mut().flatten() {
            if let (Some(_), Some(view)) = (arrival.active, arrival.session.as_mut()) {
                view.partner_online = online.next().flatten();
            }
        }
        Ok(answers)
    }

    /// Whether each user has a socket open anywhere (`None` for all when
    /// the bus cannot say). Where a user stands after a (re)connect includes
    /// whether the partner is still there: `user_left` may have gone by.
    pub async fn presence_of(&self, users: &[UserId]) -> Vec<Option<bool>> {
        if users.is_empty() {
            return Vec::new();
        }
        match self.bus.nodes_of(users).await {
            Ok(nodes) if nodes.len() == users.len() => {
                nodes.iter().map(|n| Some(!n.is_empty())).collect()
            }
            _ => vec![None; users.len()],
        }
    }

    /// Where the user stands: their active session, or the ended one they
    /// still have to rate, with its latest messages.
    pub async fn current_session(&self, me: UserId) -> ChatResult<Option<SessionView>> {
        match self.store.current_session(me).await? {
            Some(s) => {
                self.remember(&s);
                let mut view = self.session_view(&s, me, true).await?;
                if let (SessionStatus::Active, Some(partner)) = (s.status, s.partner_of(me)) {
                    view.partner_online = self.presence_of(&[partner]).await[0];
                }
                Ok(Some(view))
            }
            // No session is no answer for a user the database does not
            // know (a token outliving its account): that is not signed in.
            None => self.user(me).await.map(|_| None),
        }
    }

    /// A page of history after `after`, oldest first.
    pub async fn history(
        &self,
        me: UserId,
        session: SessionId,
        after: i64,
        limit: Option<u32>,
    ) -> ChatResult<Vec<MessageView>> {
        let limit = limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(Invalid::new("limit", format!("must be 1 to {MAX_PAGE}")).into());
        }
        if after < 0 {
            return Err(Invalid::new("after", "must not be negative").into());
        }
        self.my_session(me, session).await?;
        let ms = self.store.messages_after(session, after, limit).await?;
        Ok(ms.iter().map(|m| Self::message_view(m, me)).collect())
    }

    /// Online users, and waiting users per gender.
    pub async fn online(&self) -> ChatResult<(u64, WaitingCounts)> {
        Ok((
            self.bus.online_count().await?,
            self.bus.queue_counts().await?,
        ))
    }

    // --- actions -------------------------------------------------------------

    /// Enter the match queue. `CONFLICT` while in an active session.
    pub async fn find_match(&self, actor: &Actor) -> ChatResult<()> {
        self.limiters.find_match.check(&actor.user)?;
        let user = self.user(actor.user).await?;
        let gender = user
            .gender
            .ok_or_else(|| Invalid::new("gender", "choose a gender before searching"))?;
        if let Some(s) = self.store.current_session(actor.user).await? {
            if s.status == SessionStatus::Active {
                return Err(ChatError::Conflict("already in an active session"));
            }
        }
        let entry = QueueEntry {
            user: actor.user,
            gender,
            seeking: user.seeking,
            joined_at_ms: Utc::now().timestamp_millis(),
        };
        if self.bus.queue_join(&entry).await? {
            metrics::counter!("io_match_searches_total").increment(1);
        }
        self.notify(
            vec![(actor.user, ServerEvent::Searching(Empty {}))],
            actor.conn.clone(),
        )
        .await
    }

    /// Leave the match queue (idempotent). `CONFLICT` once the search has
    /// ended in a match: the user is in a chat, not idle.
    pub async fn cancel_search(&self, actor: &Actor) -> ChatResult<()> {
        // Someone who was still queued is idle now, whatever else; only
        // someone who was not may have been matched meanwhile.
        if self.bus.queue_leave(&[actor.user]).await? == 0 {
            if let Some(s) = self.store.current_session(actor.user).await? {
                if s.status == SessionStatus::Active {
                    return Err(ChatError::Conflict("already in an active session"));
                }
            }
        }
        self.notify(
            vec![(actor.user, ServerEvent::SearchCancelled(Empty {}))],
            actor.conn.clone(),
        )
        .await
    }

    /// Commit a message, then tell both users. The sender's answer is the
    /// committed message (its ack).
    pub async fn send_message(
        self: &Arc<Self>,
        actor: &Actor,
        session: SessionId,
        content: &str,
        client_msg_id: &str,
    ) -> ChatResult<MessageView> {
        self.submit_message(actor, session, content, client_msg_id)
            .await?
            .await
    }

    /// The first half of `send_message`: check the message and queue it for
    /// commit, in call order. The returned future commits, tells both users
    /// and yields the ack; a transport may await it later so one socket can
    /// have several messages in flight (their order is kept).
    pub async fn submit_message(
        self: &Arc<Self>,
        actor: &Actor,
        session: SessionId,
        content: &str,
        client_msg_id: &str,
    ) -> ChatResult<impl std::future::Future<Output = ChatResult<MessageView>> + Send + 'static>
    {
        let content = MessageContent::parse(content)?;
        let client_msg_id = ClientMsgId::parse(client_msg_id)?;
        let partner = self.partner_in(actor.user, session).await?;
        self.limiters.messages.check(&actor.user)?;
        let committed = self
            .writer
            .submit(NewMessage {
                id: MessageId::new(),
                session_id: session,
                sender_id: actor.user,
                content,
                client_msg_id,
                created_at: Utc::now(),
            })
            .await?;
        let chat = self.clone();
        let actor = actor.clone();
        Ok(async move {
            // A conflict (the session ended meanwhile) keeps the store's words.
            let stored = committed.await.map_err(ChatError::from)?;
            metrics::counter!("io_chat_messages_total").increment(1);
            chat.notify(
                vec![
                    (
                        actor.user,
                        ServerEvent::MessageReceived(MessageData {
                            message: Self::message_view(&stored, actor.user),
                        }),
                    ),
                    (
                        partner,
                        ServerEvent::MessageReceived(MessageData {
                            message: Self::message_view(&stored, partner),
                        }),
                    ),
                ],
                actor.conn.clone(),
            )
            .await?;
            Ok(Self::message_view(&stored, actor.user))
        })
    }

    /// Relay a typing indicator to the partner; never stored.
    pub async fn typing(&self, actor: &Actor, session: SessionId, started: bool) -> ChatResult<()> {
        let partner = self.partner_in(actor.user, session).await?;
        // Only starts count: a stop must always get through, or the
        // partner would see "typing…" that never ends.
        if started {
            self.limiters.typing.check(&actor.user)?;
            self.ensure_active(actor.user, session).await?;
        } else if self.ensure_active(actor.user, session).await.is_err() {
            // A stop after the end (a client tidying up its typing state) is
            // no mistake; it just reaches no one.
            return Ok(());
        }
        let data = SessionRef {
            session_id: session.0,
        };
        let event = if started {
            ServerEvent::UserTyping(data)
        } else {
            ServerEvent::UserStoppedTyping(data)
        };
        self.notify(vec![(partner, event)], None).await
    }

    /// Ask to reveal identities; the partner is told. Asking while the
    /// partner's own request waits for an answer is saying yes to it (two
    /// people who both asked have both consented): both get the cards.
    /// Each participant asks at most [`MAX_REVEAL_ASKS`] times per session,
    /// so a partner who said no is not asked over and over.
    pub async fn reveal_request(
        &self,
        actor: &Actor,
        session: SessionId,
    ) -> ChatResult<RevealRequestView> {
        let s = self.my_session(actor.user, session).await?;
        if s.status != SessionStatus::Active {
            return Err(ChatError::Conflict("the session is not active"));
        }
        let partner = s.partner_of(actor.user).ok_or(ChatError::NotFound)?;
        let partner_waits =
            || async {
                let latest = self.store.latest_reveal(session).await?;
                ChatResult::Ok(latest.is_some_and(|r| {
                    r.status == RevealStatus::Pending && r.requester_id == partner
                }))
            };
        let asked = self.store.reveal_requests_by(session, actor.user).await?;
        let created = if asked >= MAX_REVEAL_ASKS {
            Err(ChatError::Conflict(
                "you have asked to reveal three times in this chat: it is up to your partner now",
            ))
        } else {
            self.store
                .create_reveal_request(session, actor.user, Utc::now())
                .await
                .map_err(ChatError::from)
        };
        let request = match created {
            Ok(request) => request,
            Err(ChatError::Conflict(_)) if partner_waits().await? => {
                return self
                    .reveal_respond(actor, session, true)
                    .await
                    .map_err(|e| match e {
                        // Another tab of this user answered it first.
                        ChatError::Conflict(_) => ChatError::Conflict(
                            "your partner's request was just answered: ask again if you like",
                        ),
                        e => e,
                    });
            }
            Err(e) => return Err(e),
        };
        metrics::counter!("io_reveal_requests_total").increment(1);
        let me = self.user(actor.user).await?;
        self.notify(
            vec![(
                partner,
                ServerEvent::RevealRequested(RevealRequestedData {
                    session_id: session.0,
                    requester_alias: me.alias.to_string(),
                }),
            )],
            None,
        )
        .await?;
        Ok(Self::reveal_request_view(&request, actor.user, None))
    }

    /// Answer the partner's reveal request. On accept both get both identity
    /// cards; on decline nothing identifying leaves the server.
    pub async fn reveal_respond(
        &self,
        actor: &Actor,
        session: SessionId,
        accept: bool,
    ) -> ChatResult<RevealRequestView> {
        let s = self.my_session(actor.user, session).await?;
        if s.status != SessionStatus::Active {
            return Err(ChatError::Conflict("the session is not active"));
        }
        let partner_id = s.partner_of(actor.user).ok_or(ChatError::NotFound)?;
        let request = self
            .store
            .respond_reveal(session, actor.user, accept, Utc::now())
            .await
            .map_err(|e| match e {
                // The session is the user's and active: what is missing is
                // a request of the partner's that waits for an answer.
                StoreError::NotFound => ChatError::Conflict(
                    "no reveal request from your partner is waiting for an answer",
                ),
                e => e.into(),
            })?;
        let result = if accept { "accepted" } else { "declined" };
        metrics::counter!("io_reveal_responses_total", "result" => result).increment(1);
        let (me, partner) = if accept {
            (
                Some(self.user(actor.user).await?),
                Some(self.user(partner_id).await?),
            )
        } else {
            (None, None)
        };
        let ids_for = |viewer_is_me: bool| match (&me, &partner) {
            (Some(m), Some(p)) if viewer_is_me => Some(Self::identities(m, p)),
            (Some(m), Some(p)) => Some(Self::identities(p, m)),
            _ => None,
        };
        let response = |viewer_is_me: bool| {
            ServerEvent::RevealResponse(RevealResponseData {
                session_id: session.0,
                status: result.into(),
                identities: ids_for(viewer_is_me),
            })
        };
        self.notify(
            vec![(actor.user, response(true)), (partner_id, response(false))],
            actor.conn.clone(),
        )
        .await?;
        Ok(Self::reveal_request_view(
            &request,
            actor.user,
            ids_for(true),
        ))
    }

    /// End the session; both are told who ended it.
    pub async fn end_session(&self, actor: &Actor, session: SessionId) -> ChatResult<SessionView> {
        let s = self.my_session(actor.user, session).await?;
        if s.status != SessionStatus::Active {
            return Err(ChatError::Conflict("the session already ended"));
        }
        let partner = s.partner_of(actor.user).ok_or(ChatError::NotFound)?;
        let ended = self
            .store
            .end_session(session, actor.user, Utc::now())
            .await?;
        self.remember(&ended);
        metrics::counter!("io_sessions_ended_total").increment(1);
        if let Some(at) = ended.ended_at {
            let secs = (at - ended.started_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("io_session_duration_seconds").record(secs);
        }
        metrics::histogram!("io_session_messages").record(ended.last_seq as f64);
        let ended_event = |by: &str| {
            ServerEvent::SessionEnded(SessionEndedData {
                session_id: session.0,
                ended_by: by.into(),
            })
        };
        self.notify(
            vec![
                (actor.user, ended_event("me")),
                (partner, ended_event("partner")),
            ],
            actor.conn.clone(),
        )
        .await?;
        self.session_view(&ended, actor.user, false).await
    }

    /// Rate an ended session, once; the rater is told.
    pub async fn rate_session(
        &self,
        actor: &Actor,
        session: SessionId,
        rating: i64,
    ) -> ChatResult<RatingView> {
        let rating = Rating::parse(rating)?;
        let s = self.my_session(actor.user, session).await?;
        if s.status == SessionStatus::Active {
            return Err(ChatError::Conflict("end the session before rating it"));
        }
        let (record, _) = self
            .store
            .rate_session(session, actor.user, rating, Utc::now())
            .await?;
        metrics::counter!("io_ratings_total", "rating" => rating.label()).increment(1);
        self.notify(
            vec![(
                actor.user,
                ServerEvent::SessionRated(SessionRatedData {
                    session_id: session.0,
                    rating: rating.get(),
                }),
            )],
            actor.conn.clone(),
        )
        .await?;
        Ok(RatingView {
            session_id: session.0,
            rating: record.rating.get(),
            created_at: record.created_at,
        })
    }

    /// Tell the partner of the user's active session that the user came
    /// online (first socket) or went away (last socket closed).
    pub async fn presence_changed(&self, me: UserId, online: bool) -> ChatResult<()> {
        let Some(s) = self.store.current_session(me).await? else {
            return Ok(());
        };
        if s.status != SessionStatus::Active {
            return Ok(());
        }
        let Some(partner) = s.partner_of(me) else {
            return Ok(());
        };
        self.tell_presence(s.id, partner, online).await
    }

    /// `user_joined` / `user_left` to `partner`, for the active session
    /// `session` the caller already knows.
    pub async fn tell_presence(
        &self,
        session: SessionId,
        partner: UserId,
        online: bool,
    ) -> ChatResult<()> {
        let event = Self::presence_event(session, online);
        self.notify(vec![(partner, event)], None).await
    }

    /// `user_joined` (online) or `user_left` for `session`.
    pub fn presence_event(session: SessionId, online: bool) -> ServerEvent {
        let data = SessionRef {
            session_id: session.0,
        };
        if online {
            ServerEvent::UserJoined(data)
        } else {
            ServerEvent::UserLeft(data)
        }
    }

    /// Tell both users of each freshly committed session (the matcher's
    /// last step), for a whole pairing round at once: one read of every
    /// user involved and one publish. A session this new has no reveal,
    /// rating or message yet, so nothing else is read.
    pub async fn announce_matches(&self, sessions: &[Session]) -> ChatResult<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<UserId> = sessions.iter().flat_map(|s| [s.user1, s.user2]).collect();
        ids.sort_unstable();
        ids.dedup();
        let users: HashMap<UserId, User> = self
            .store
            .users(&ids)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let mut deliveries = Vec::with_capacity(2 * sessions.len());
        for s in sessions {
            self.remember(s);
            for (me, partner) in [(s.user1, s.user2), (s.user2, s.user1)] {
                let Some(partner) = users.get(&partner) else {
                    continue;
                };
                let view = SessionView {
                    id: s.id.0,
                    status: s.status.as_str().into(),
                    started_at: s.started_at,
                    ended_at: s.ended_at,
                    ended_by: None,
                    partner: Self::partner_view(partner),
                    partner_online: None,
                    reveal: Self::reveal_view(None, me, None),
                    my_rating: None,
                    identities: None,
                    messages: None,
                };
                let user = view.partner.clone();
                deliveries.push((
                    me,
                    ServerEvent::MatchFound(MatchFoundData {
                        session: view,
                        user,
                    }),
                ));
            }
        }
        self.notify(deliveries, None).await
    }

    /// Tell both users of one committed session, reading its current state
    /// (used to re-announce a session found after a leader change).
    pub async fn announce_match(&self, s: &Session) -> ChatResult<()> {
        self.remember(s);
        let mut deliveries = Vec::with_capacity(2);
        for me in [s.user1, s.user2] {
            let session = self.session_view(s, me, false).await?;
            let user = session.partner.clone();
            deliveries.push((
                me,
                ServerEvent::MatchFound(MatchFoundData { session, user }),
            ));
        }
        self.notify(deliveries, None).await
    }
}
