//! The users file written by `io admin provision-users`: one JSON object per
//! line with `id`, `email`, `gender` and `token`.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} line {1}: {2}")]
    Line(String, usize, serde_json::Error),
    #[error("{0} holds no users")]
    Empty(String),
}

/// One provisioned user.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: String,
    pub email: String,
    /// `dude` or `girl`; decides the node under `--pairs-on-separate-nodes`.
    #[serde(default)]
    pub gender: Option<String>,
    /// Access token for `join` and `Authorization: Bearer`.
    pub token: String,
}

/// Read the file; blank lines are skipped; at most `max` users.
pub fn load(path: &Path, max: Option<usize>) -> Result<Vec<User>, UsersError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read(name.clone(), e))?;
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if max.is_some_and(|m| users.len() >= m) {
            break;
        }
        let user: User =
            serde_json::from_str(line).map_err(|e| UsersError::Line(name.clone(), i + 1, e))?;
        users.push(user);
    }
    if users.is_empty() {
        return Err(UsersError::Empty(name));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_json_lines() {
        let path = std::env::temp_dir().join(format!("lt-users-{}.jsonl", std::process::id()));
        std::fs::write(
            &path,
            "{\"id\":\"a\",\"email\":\"a@x\",\"gender\":\"dude\",\"token\":\"t1\"}\n\n\
             {\"id\":\"b\",\"email\":\"b@x\",\"gender\":\"girl\",\"token\":\"t2\"}\n",
        )
        .unwrap();
        let all = load(&path, None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].gender.as_deref(), Some("girl"));
        assert_eq!(load(&path, Some(1)).unwrap().len(), 1);
        std::fs::remove_file(&path).unwrap();
    }
}
