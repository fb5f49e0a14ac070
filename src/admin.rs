//! `io admin`: operator tasks that need direct database access and the
//! signing key, so they can never be reached over HTTP.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use io_auth::Tokens;
use io_domain::model::ProfileUpdate;
use io_domain::types::{Alias, Email, Gender, Seeking};

use crate::config::{Role, Settings};

/// Create `count` verified users for load tests and write their tokens.
pub async fn provision_users(
    s: &Settings,
    count: u32,
    out: &Path,
    prefix: &str,
) -> anyhow::Result<()> {
    // Tokens signed with a throwaway key would be refused by every node;
    // found out before the database is touched.
    let secret = crate::app::lasting_jwt_secret(Role::All, s)?.context(
        "provision-users needs IO_JWT_SECRET, the key the api and gateway nodes sign with, \
         when the database is not SQLite",
    )?;
    let store = io_store::connect(&s.database_url)
        .await
        .context("cannot open the store (IO_DATABASE_URL)")?;
    let tokens = Tokens::new(&secret, &[], Tokens::DEFAULT_ACCESS_TTL);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let run = &run[run.len() - 8..];
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    let now = chrono::Utc::now();
    for n in 0..count {
        let email = Email::parse(&format!("{prefix}-{run}-{n}@load.test"))
            .map_err(|e| anyhow::anyhow!("bad --prefix: {e}"))?;
        let alias = Alias::parse(&format!("load_{run}_{n}")).unwrap_or_else(|_| Alias::generate());
        let user = store.upsert_user(&email, &alias, now).await?;
        let gender = if n % 2 == 0 {
            Gender::Dude
        } else {
            Gender::Girl
        };
        store
            .update_profile(
                user.id,
                &ProfileUpdate {
                    gender: Some(gender),
                    seeking: Some(Seeking::default_for(Some(gender))),
                    ..Default::default()
                },
                now,
            )
            .await?;
        let line = serde_json::json!({
            "id": user.id.0,
            "email": email.as_str(),
            "gender": gender.as_str(),
            "token": tokens.issue_access(user.id),
        });
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    eprintln!("provisioned {count} users into {}", out.display());
    Ok(())
}
