//! `api`: HTTP traffic on the open model. Each user has a keep-alive
//! connection and its own schedule (the total `--rate` split evenly); every
//! request's latency counts from its scheduled time, so a slow answer shows
//! up in the requests queued behind it. Kinds are drawn by weight:
//! profile reads and writes, the online count, and a full magic-link sign-in
//! (send-magic-link → the dev mailer's /dev/mailbox → verify-token → me)
//! when the server runs the dev mailer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::task::JoinSet;

use crate::cli::ApiArgs;
use crate::http::HttpConn;
use crate::stats::{Count, Lat};
use crate::sys;
use crate::users::User;
use crate::worker::{Ctx, Slice};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ProfileGet,
    ProfilePut,
    OnlineCount,
    Signin,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::ProfileGet, "profile_get"),
    (Kind::ProfilePut, "profile_put"),
    (Kind::OnlineCount, "online_count"),
    (Kind::Signin, "signin"),
];

/// Parse `profile_get=4,signin=1`: weights by kind (absent kinds weigh 0).
pub fn parse_mix(mix: &str) -> Result<[u32; 4], String> {
    let mut w = [0u32; 4];
    for part in mix.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected kind=weight"))?;
        let i = KINDS
            .iter()
            .position(|(_, n)| *n == name.trim())
            .ok_or_else(|| {
                format!("unknown kind `{name}` (profile_get, profile_put, online_count, signin)")
            })?;
        w[i] = weight
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: weight is not a whole number"))?;
    }
    if w.iter().all(|x| *x == 0) {
        return Err("every weight is 0".into());
    }
    Ok(w)
}

fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn pick(weights: &[u32; 4], j: usize, k: u64) -> Kind {
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    let mut r = mix64(((j as u64) << 32) ^ k) % total.max(1);
    for (i, w) in weights.iter().enumerate() {
        if r < *w as u64 {
            return KINDS[i].0;
        }
        r -= *w as u64;
    }
    Kind::ProfileGet
}

pub async fn run(ctx: Arc<Ctx>, args: &ApiArgs, users: Vec<User>, slice: Slice) {
    let mut weights = match parse_mix(&args.mix) {
        Ok(w) => w,
        Err(e) => {
            ctx.rec.error(Count::ProtocolErrors, format!("--mix: {e}"));
            return;
        }
    };
    let timeout = Duration::from_secs_f64(args.request_timeout.max(0.1));
    if weights[3] > 0 {
        let mut probe = HttpConn::new(ctx.targets[0].clone(), ctx.source(0), timeout);
        let status = probe
            .request(Method::GET, "/dev/mailbox", None, None)
            .await
            .map(|a| a.status)
            .unwrap_or(0);
        if status != 200 {
            weights[3] = 0;
            ctx.note(
                "signin",
                serde_json::json!(format!(
                    "skipped: GET /dev/mailbox answered {status} (no dev mailer)"
                )),
            );
            if weights.iter().all(|w| *w == 0) {
                return;
            }
        } else {
            ctx.note("signin", serde_json::json!("on: via /dev/mailbox"));
        }
    }
    let interval_us = (users.len() as f64 / args.rate.max(1e-6) * 1e6) as u64;
    let nodes = ctx.targets.len();
    let mut tasks = JoinSet::new();
    for (j, user) in users
        .into_iter()
        .enumerate()
        .filter(|(j, _)| slice.owns(*j))
    {
        let ctx = ctx.clone();
        let conn = HttpConn::new(
            ctx.targets[super::node_round_robin(j, nodes)].clone(),
            ctx.source(j),
            timeout,
        );
        tasks.spawn(async move { user_task(&ctx, conn, j, user, weights, interval_us).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn user_task(
    ctx: &Ctx,
    mut conn: HttpConn,
    j: usize,
    user: User,
    weights: [u32; 4],
    interval_us: u64,
) {
    let tl = ctx.timeline;
    let first =
        tl.connect_at(j, ctx.common.ramp_rate) + (super::spread(j) * interval_us as f64) as u64;
    let mut used_links: HashSet<String> = HashSet::new();
    for k in 0u64.. {
        let sched = first + k * interval_us;
        if sched >= tl.steady_end_us {
            break;
        }
        sys::sleep_until_us(sched).await;
        let now = sys::mono_us();
        let lag = now.saturating_sub(sched);
        let phase = tl.phase(sched);
        ctx.rec.record(Lat::SendLag, phase, lag);
        if lag > ctx.late_us {
            ctx.rec.incr(Count::LateSends);
        }
        let kind = pick(&weights, j, k);
        let ok = match kind {
            Kind::ProfileGet => {
                call(
                    ctx,
                    &mut conn,
                    "profile_get",
                    Method::GET,
                    "/api/users/profile",
                    Some(&user.token),
                    None,
                )
                .await
            }
            Kind::ProfilePut => {
                let body =
                    serde_json::to_vec(&serde_json::json!({ "details": format!("load test {k}") }))
                        .expect("json");
                call(
                    ctx,
                    &mut conn,
                    "profile_put",
                    Method::PUT,
                    "/api/users/profile",
                    Some(&user.token),
                    Some(body),
                )
                .await
            }
            Kind::OnlineCount => {
                call(
                    ctx,
                    &mut conn,
                    "online_count",
                    Method::GET,
                    "/api/users/online-count",
                    Some(&user.token),
                    None,
                )
                .await
            }
            Kind::Signin => signin(ctx, &mut conn, &user.email, &mut used_links).await,
        };
        if ok {
            let lat = match kind {
                Kind::ProfileGet => Lat::ProfileGet,
                Kind::ProfilePut => Lat::ProfilePut,
                Kind::OnlineCount => Lat::OnlineCount,
                Kind::Signin => Lat::Signin,
            };
            ctx.rec
                .record(lat, phase, sys::mono_us().saturating_sub(sched));
        }
    }
}

/// One request; counts the answer. `true` when it was 2xx.
async fn call(
    ctx: &Ctx,
    conn: &mut HttpConn,
    kind: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> bool {
    call_body(ctx, conn, kind, method, path, token, body)
        .await
        .is_some()
}

async fn call_body(
    ctx: &Ctx,
    conn: &mut HttpConn,
    kind: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> Option<bytes::Bytes> {
    match conn.request(method, path, token, body).await {
        Ok(a) => {
            ctx.rec.incr(Count::HttpRequests);
            ctx.rec.status(kind, a.status);
            if (200..300).contains(&a.status) {
                Some(a.body)
            } else {
                ctx.rec
                    .error(Count::HttpErrors, format!("{kind} {}", a.status));
                None
            }
        }
        Err(e) => {
            ctx.rec
                .error(Count::TransportErrors, format!("{kind}: {}", e.kind()));
            None
        }
    }
}

/// The whole magic-link sign-in of `email`; `true` when a fresh access token
/// worked on /api/auth/me.
async fn signin(ctx: &Ctx, conn: &mut HttpConn, email: &str, used: &mut HashSet<String>) -> bool {
    // Links already in the mailbox are not ours to use.
    let Some(before) = call_body(
        ctx,
        conn,
        "mailbox",
        Method::GET,
        "/dev/mailbox",
        None,
        None,
    )
    .await
    else {
        return false;
    };
    for t in link_tokens(&String::from_utf8_lossy(&before), email) {
        used.insert(t);
    }
    let body = serde_json::to_vec(&serde_json::json!({ "email": email })).expect("json");
    if !call(
        ctx,
        conn,
        "send_magic_link",
        Method::POST,
        "/api/auth/send-magic-link",
        None,
        Some(body),
    )
    .await
    {
        return false;
    }
    // Mail may be sent after the 202: look a few times.
    let mut token = None;
    for attempt in 0..20 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(page) = call_body(
            ctx,
            conn,
            "mailbox",
            Method::GET,
            "/dev/mailbox",
            None,
            None,
        )
        .await
        else {
            return false;
        };
        token = link_tokens(&String::from_utf8_lossy(&page), email)
            .into_iter()
            .find(|t| !used.contains(t));
        if token.is_some() {
            break;
        }
    }
    let Some(token) = token else {
        ctx.rec
            .error(Count::Timeouts, "signin: no new link in /dev/mailbox");
        return false;
    };
    used.insert(token.clone());
    let body = serde_json::to_vec(&serde_json::json!({ "token": token })).expect("json");
    let Some(answer) = call_body(
        ctx,
        conn,
        "verify_token",
        Method::POST,
        "/api/auth/verify-token",
        None,
        Some(body),
    )
    .await
    else {
        return false;
    };
    let access = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| {
            v.get("accessToken")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        });
    let Some(access) = access else {
        ctx.rec
            .error(Count::ProtocolErrors, "verify-token: no accessToken");
        return false;
    };
    call(
        ctx,
        conn,
        "me",
        Method::GET,
        "/api/auth/me",
        Some(&access),
        None,
    )
    .await
}

/// Magic-link tokens (`…#token=XYZ` or `?token=XYZ`) on a mailbox page that
/// belong to mail for `email`. The page may be HTML or JSON; a link belongs
/// to the last address written before it (IO's page lists `to <address>:
/// <link>`), or to the first one after it when none comes before.
pub fn link_tokens(page: &str, email: &str) -> Vec<String> {
    let lower = page.to_ascii_lowercase();
    let email = email.to_ascii_lowercase();
    // Start and text of every address-looking word.
    let addresses: Vec<(usize, &str)> = lower
        .match_indices('@')
        .map(|(at, _)| {
            let is_addr = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
            let start = lower[..at]
                .rfind(|c: char| !is_addr(c))
                .map(|p| p + 1)
                .unwrap_or(0);
            let end = lower[at + 1..]
                .find(|c: char| !is_addr(c))
                .map(|p| at + 1 + p)
                .unwrap_or(lower.len());
            (start, &lower[start..end])
        })
        .collect();
    let mut found: Vec<String> = Vec::new();
    for (i, _) in page.match_indices("token=") {
        let start = i + "token=".len();
        let token: String = page[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || "-_.~%".contains(*c))
            .collect();
        if token.is_empty() {
            continue;
        }
        let owner = addresses
            .iter()
            .rev()
            .find(|(p, _)| *p < i)
            .or_else(|| addresses.iter().find(|(p, _)| *p > i))
            .map(|(_, a)| *a);
        if owner == Some(email.as_str()) && !found.contains(&token) {
            found.push(token);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_picks_by_weight() {
        let w = parse_mix("profile_get=3, online_count=1").unwrap();
        assert_eq!(w, [3, 0, 1, 0]);
        assert!(parse_mix("nope=1").is_err());
        assert!(parse_mix("signin=0").is_err());
        let picks: Vec<Kind> = (0..1000).map(|k| pick(&w, 7, k)).collect();
        let gets = picks.iter().filter(|k| **k == Kind::ProfileGet).count();
        assert!((650..850).contains(&gets), "{gets}");
        assert!(!picks.contains(&Kind::Signin));
    }

    #[test]
    fn finds_links_in_json_and_html_mailboxes() {
        let json = r#"[{"to":"a@x.test","link":"http://l/auth/verify#token=AAA"},
                       {"to":"b@x.test","link":"http://l/auth/verify#token=BBB"}]"#;
        assert_eq!(link_tokens(json, "b@x.test"), vec!["BBB"]);
        assert_eq!(link_tokens(json, "a@x.test"), vec!["AAA"]);
        // IO's /dev/mailbox: newest first, the link (twice) after its address.
        let html = "<li><time datetime=\"2026-11-25T13:11:00+00:00\">2026-11-25T13:11:00+00:00</time> \
            to <span class=\"to\">c@x.test</span>: <a class=\"link\" \
            href=\"http://localhost:8080/auth/verify#token=CC-1\">http://localhost:8080/auth/verify#token=CC-1</a></li>\n\
            <li><time datetime=\"2026-11-25T13:10:00+00:00\">2026-11-25T13:10:00+00:00</time> \
            to <span class=\"to\">d@x.test</span>: <a class=\"link\" \
            href=\"http://localhost:8080/auth/verify#token=DD_2\">http://localhost:8080/auth/verify#token=DD_2</a></li>\n";
        assert_eq!(link_tokens(html, "d@x.test"), vec!["DD_2"]);
        assert_eq!(link_tokens(html, "c@x.test"), vec!["CC-1"]);
        assert!(link_tokens(html, "e@x.test").is_empty());
    }
}
