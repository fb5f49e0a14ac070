//! A small stand-in for IO, enough of design 3.2/3.3 for the harness to be
//! tested end to end without the real server: join, matching (dude ↔ girl,
//! never the same pair twice), messages to both sides, end and rate, the
//! profile routes and a dev mailbox. Several listeners share one state, like
//! gateway nodes behind one bus. It can drop or duplicate deliveries on
//! purpose, so the harness's loss and duplicate counting is checked too.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::{upgrade, Frame, OpCode, Payload};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use io_protocol::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use uuid::Uuid;

#[derive(Default, Clone, Copy)]
pub struct Faults {
    /// Do not deliver every Nth message to the partner (0: never).
    pub drop_every: u64,
    /// Deliver every Nth message to the partner twice (0: never).
    pub duplicate_every: u64,
}

struct UserRec {
    id: Uuid,
    email: String,
    alias: String,
    gender: String,
}

struct Sess {
    a: Uuid,
    b: Uuid,
    active: bool,
    seq: i64,
}

#[derive(Default)]
struct State {
    users: HashMap<String, usize>,
    recs: Vec<UserRec>,
    sockets: HashMap<Uuid, Vec<mpsc::UnboundedSender<Out>>>,
    queue: Vec<Uuid>,
    sessions: HashMap<Uuid, Sess>,
    current: HashMap<Uuid, Uuid>,
    met: HashSet<(Uuid, Uuid)>,
    mailbox: Vec<(String, String)>,
}

enum Out {
    Text(String),
    Ping,
}

pub struct Fake {
    state: Mutex<State>,
    faults: Faults,
    messages: AtomicU64,
    pub pongs: AtomicU64,
    pub joins: AtomicU64,
}

impl Fake {
    fn by_id(&self, st: &State, id: Uuid) -> Option<usize> {
        st.recs.iter().position(|r| r.id == id)
    }
}

/// Start `nodes` listeners over one state with `users` users (tokens `tok-N`,
/// genders alternating dude/girl). Returns the URLs.
pub async fn start(nodes: usize, users: usize, faults: Faults) -> (Arc<Fake>, Vec<String>) {
    let mut st = State::default();
    for n in 0..users {
        st.users.insert(format!("tok-{n}"), n);
        st.recs.push(UserRec {
            id: Uuid::new_v4(),
            email: format!("u{n}@load.test"),
            alias: format!("alias{n:04}"),
            gender: if n % 2 == 0 { "dude" } else { "girl" }.into(),
        });
    }
    let fake = Arc::new(Fake {
        state: Mutex::new(st),
        faults,
        messages: AtomicU64::new(0),
        pongs: AtomicU64::new(0),
        joins: AtomicU64::new(0),
    });
    let mut urls = Vec::new();
    for node in 0..nodes {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        urls.push(format!("http://{addr}"));
        let fake = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let fake = fake.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, hyper::Error>(route(fake, node, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
    }
    (fake, urls)
}

/// The users file the harness reads.
pub fn users_file(dir: &std::path::Path, users: usize) -> std::path::PathBuf {
    let path = dir.join("users.jsonl");
    let mut text = String::new();
    for n in 0..users {
        let gender = if n % 2 == 0 { "dude" } else { "girl" };
        text.push_str(&format!(
            "{{\"id\":\"{n}\",\"email\":\"u{n}@load.test\",\"gender\":\"{gender}\",\"token\":\"tok-{n}\"}}\n"
        ));
    }
    std::fs::write(&path, text).expect("write users");
    path
}

fn json(status: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

async fn route(fake: Arc<Fake>, node: usize, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws" {
        let Ok((resp, fut)) = upgrade::upgrade(&mut req) else {
            return json(400, serde_json::json!({}));
        };
        tokio::spawn(async move {
            if let Ok(ws) = fut.await {
                socket(fake, node, ws).await;
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Full::new(Bytes::new()));
    }
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| fake.state.lock().unwrap().users.get(t).copied());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let unauthorized = || {
        json(
            401,
            serde_json::json!({"error": {"code": "UNAUTHORIZED", "message": "no"}}),
        )
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/api/users/profile") | ("PUT", "/api/users/profile") | ("GET", "/api/auth/me") => {
            let Some(n) = user else { return unauthorized() };
            let st = fake.state.lock().unwrap();
            let r = &st.recs[n];
            json(
                200,
                serde_json::json!({"profile": {"id": r.id, "email": r.email, "alias": r.alias}}),
            )
        }
        ("GET", "/api/users/online-count") => {
            let st = fake.state.lock().unwrap();
            json(
                200,
                serde_json::json!({"count": st.sockets.len(), "waiting": {"dude": 0, "girl": 0}}),
            )
        }
        ("POST", "/api/auth/send-magic-link") => {
            let email = body
                .get("email")
                .and_then(|e| e.as_str())
                .unwrap_or("")
                .to_string();
            let token = format!("ml{}", Uuid::new_v4().simple());
            fake.state.lock().unwrap().mailbox.push((email, token));
            json(202, serde_json::json!({}))
        }
        ("GET", "/dev/mailbox") => {
            // The shape of IO's page: newest first, the address before its link.
            let st = fake.state.lock().unwrap();
            let mut page = String::from("<!doctype html><ul>\n");
            for (to, t) in st.mailbox.iter().rev() {
                let link = format!("http://localhost/auth/verify#token={t}");
                page.push_str(&format!(
                    "<li><time>now</time> to <span class=\"to\">{to}</span>: <a class=\"link\" href=\"{link}\">{link}</a></li>\n"
                ));
            }
            page.push_str("</ul>\n");
            Response::builder()
                .status(200)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(page)))
                .expect("response")
        }
        ("POST", "/api/auth/verify-token") => {
            let token = body.get("token").and_then(|e| e.as_str()).unwrap_or("");
            let mut st = fake.state.lock().unwrap();
            let Some(i) = st.mailbox.iter().position(|(_, t)| t == token) else {
                return unauthorized();
            };
            let (email, _) = st.mailbox.remove(i);
            let n = st.recs.iter().position(|r| r.email == email).unwrap_or(0);
            json(
                200,
                serde_json::json!({"accessToken": format!("tok-{n}"), "refreshToken": "r", "expiresIn": 900}),
            )
        }
        _ => json(
            404,
            serde_json::json!({"error": {"code": "NOT_FOUND", "message": "no"}}),
        ),
    }
}

fn session_view(fake: &Fake, st: &State, sid: Uuid, me: Uuid) -> SessionView {
    let s = &st.sessions[&sid];
    let partner = if s.a == me { s.b } else { s.a };
    let p = &st.recs[fake.by_id(st, partner).unwrap()];
    SessionView {
        id: sid,
        status: if s.active { "active" } else { "ended" }.into(),
        started_at: chrono::Utc::now(),
        ended_at: None,
        ended_by: None,
        partner: PartnerView {
            alias: p.alias.clone(),
            gender: Some(p.gender.clone()),
        },
        partner_online: None,
        reveal: RevealView {
            state: "none".into(),
            requested_by: None,
            asks_left: None,
        },
        my_rating: None,
        identities: None,
        messages: None,
    }
}

fn send(st: &State, user: Uuid, ev: &ServerEvent) {
    if let Some(socks) = st.sockets.get(&user) {
        let text = encode(ev, None);
        for s in socks {
            let _ = s.send(Out::Text(text.clone()));
        }
    }
}

async fn socket(
    fake: Arc<Fake>,
    node: usize,
    ws: fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>,
) {
    let (mut rd, mut wr) = ws.split(tokio::io::split);
    rd.set_auto_pong(false);
    rd.set_auto_close(false);
    let mut nothing = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
    let Ok(first) = rd.read_frame(&mut nothing).await else {
        return;
    };
    let token = match decode(std::str::from_utf8(&first.payload).unwrap_or("")) {
        Ok((ClientEvent::Join(j), _)) => j.token,
        _ => return,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let known = fake.state.lock().unwrap().users.get(&token).copied();
    let Some(n) = known else {
        let _ = wr.write_frame(Frame::close(4401, b"")).await;
        return;
    };
    let me = {
        let mut st = fake.state.lock().unwrap();
        let r = &st.recs[n];
        let id = r.id;
        let user = UserView {
            id,
            email: r.email.clone(),
            alias: r.alias.clone(),
            gender: Some(r.gender.clone()),
            seeking: if r.gender == "dude" { "girl" } else { "dude" }.into(),
            created_at: chrono::Utc::now(),
        };
        let session = st
            .current
            .get(&id)
            .map(|sid| session_view(&fake, &st, *sid, id));
        let online = st.sockets.len() as u64;
        st.sockets.entry(id).or_default().push(tx.clone());
        let _ = tx.send(Out::Text(encode(
            &ServerEvent::Connected(ConnectedData {
                user,
                node: format!("fake-{node}"),
                online_count: online,
                session,
            }),
            None,
        )));
        let _ = tx.send(Out::Ping);
        id
    };
    fake.joins.fetch_add(1, Ordering::Relaxed);
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let frame = match out {
                Out::Text(t) => Frame::text(Payload::Owned(t.into_bytes())),
                Out::Ping => Frame::new(true, OpCode::Ping, None, Payload::Owned(b"hi".to_vec())),
            };
            if wr.write_frame(frame).await.is_err() {
                break;
            }
        }
    });
    loop {
        let Ok(frame) = rd.read_frame(&mut nothing).await else {
            break;
        };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Pong => {
                fake.pongs.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            OpCode::Text => {}
            _ => continue,
        }
        let Ok((event, reference)) = decode(std::str::from_utf8(&frame.payload).unwrap_or(""))
        else {
            let _ = tx.send(Out::Text(encode(
                &ServerEvent::Error(ErrorBody {
                    code: "VALIDATION_ERROR".into(),
                    message: "bad frame".into(),
                    field: None,
                }),
                None,
            )));
            continue;
        };
        handle(&fake, me, event, reference.as_deref(), &tx);
    }
    {
        let mut st = fake.state.lock().unwrap();
        if let Some(v) = st.sockets.get_mut(&me) {
            v.retain(|s| !s.same_channel(&tx));
            if v.is_empty() {
                st.sockets.remove(&me);
                st.queue.retain(|u| *u != me);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn handle(
    fake: &Fake,
    me: Uuid,
    event: ClientEvent,
    reference: Option<&str>,
    tx: &mpsc::UnboundedSender<Out>,
) {
    let mut st = fake.state.lock().unwrap();
    let reply = |ev: ServerEvent| {
        let _ = tx.send(Out::Text(encode(&ev, reference)));
    };
    let error = |code: &str| {
        let _ = tx.send(Out::Text(encode(
            &ServerEvent::Error(ErrorBody {
                code: code.into(),
                message: code.into(),
                field: None,
            }),
            reference,
        )));
    };
    match event {
        ClientEvent::FindMatch(_) => {
            if st.current.contains_key(&me) {
                return error("CONFLICT");
            }
            reply(ServerEvent::Searching(Empty {}));
            let my_gender = st.recs[fake.by_id(&st, me).unwrap()].gender.clone();
            let partner = st.queue.iter().copied().find(|u| {
                let g = &st.recs[fake.by_id(&st, *u).unwrap()].gender;
                *g != my_gender && !st.met.contains(&(me, *u)) && !st.met.contains(&(*u, me))
            });
            match partner {
                None => {
                    if !st.queue.contains(&me) {
                        st.queue.push(me);
                    }
                }
                Some(p) => {
                    st.queue.retain(|u| *u != p);
                    let sid = Uuid::new_v4();
                    st.met.insert((me, p));
                    st.sessions.insert(
                        sid,
                        Sess {
                            a: me,
                            b: p,
                            active: true,
                            seq: 0,
                        },
                    );
                    st.current.insert(me, sid);
                    st.current.insert(p, sid);
                    for (u, other) in [(me, p), (p, me)] {
                        let o = &st.recs[fake.by_id(&st, other).unwrap()];
                        let ev = ServerEvent::MatchFound(MatchFoundData {
                            session: session_view(fake, &st, sid, u),
                            user: PartnerView {
                                alias: o.alias.clone(),
                                gender: Some(o.gender.clone()),
                            },
                        });
                        send(&st, u, &ev);
                    }
                }
            }
        }
        ClientEvent::CancelSearch(_) => {
            st.queue.retain(|u| *u != me);
            reply(ServerEvent::SearchCancelled(Empty {}));
        }
        ClientEvent::SendMessage(m) => {
            let Some(s) = st
                .sessions
                .get_mut(&m.session_id)
                .filter(|s| s.active && (s.a == me || s.b == me))
            else {
                return error("NOT_FOUND");
            };
            s.seq += 1;
            let seq = s.seq;
            let partner = if s.a == me { s.b } else { s.a };
            let n = fake.messages.fetch_add(1, Ordering::Relaxed) + 1;
            let mut msg = MessageView {
                id: Uuid::new_v4(),
                session_id: m.session_id,
                seq,
                content: m.content,
                created_at: chrono::Utc::now(),
                client_msg_id: m.client_msg_id,
                is_me: true,
            };
            reply(ServerEvent::MessageReceived(MessageData {
                message: msg.clone(),
            }));
            msg.is_me = false;
            let ev = ServerEvent::MessageReceived(MessageData { message: msg });
            if fake.faults.drop_every == 0 || !n.is_multiple_of(fake.faults.drop_every) {
                send(&st, partner, &ev);
            }
            if fake.faults.duplicate_every != 0 && n.is_multiple_of(fake.faults.duplicate_every) {
                send(&st, partner, &ev);
            }
        }
        ClientEvent::EndSession(r) => {
            let Some(s) = st
                .sessions
                .get_mut(&r.session_id)
                .filter(|s| s.active && (s.a == me || s.b == me))
            else {
                return error("NOT_FOUND");
            };
            s.active = false;
            let (a, b) = (s.a, s.b);
            st.current.remove(&a);
            st.current.remove(&b);
            for u in [a, b] {
                let ended_by = if u == me { "me" } else { "partner" };
                send(
                    &st,
                    u,
                    &ServerEvent::SessionEnded(SessionEndedData {
                        session_id: r.session_id,
                        ended_by: ended_by.into(),
                    }),
                );
            }
        }
        ClientEvent::RateSession(r) => {
            let ok = st
                .sessions
                .get(&r.session_id)
                .is_some_and(|s| !s.active && (s.a == me || s.b == me));
            if !ok {
                return error("CONFLICT");
            }
            reply(ServerEvent::SessionRated(SessionRatedData {
                session_id: r.session_id,
                rating: r.rating as u8,
            }));
        }
        _ => {}
    }
}
