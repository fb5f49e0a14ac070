//! Key names. Each carries a hash tag (`{...}`) naming the unit that must stay
//! in one Redis Cluster slot: one node's inbox, one user's presence, the whole
//! match queue, the lease.

use io_domain::types::{NodeId, UserId};

/// The key names of one deployment, built once from its prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Prepended to every key so deployments (and tests) can share a Redis.
    prefix: String,
    pub online: String,
    pub queue_entries: String,
    pub queue_order: String,
    pub queue_changes: String,
    pub queue_seq: String,
    pub queue_counts: String,
    pub lease_holder: String,
    pub lease_fence: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let k = |rest: &str| format!("{prefix}:{rest}");
        Keys {
            prefix: prefix.to_owned(),
            online: k("{online}"),
            queue_entries: k("{mq}:entries"),
            queue_order: k("{mq}:order"),
            queue_changes: k("{mq}:changes"),
            queue_seq: k("{mq}:seq"),
            queue_counts: k("{mq}:counts"),
            lease_holder: k("{lease}:holder"),
            lease_fence: k("{lease}:fence"),
        }
    }

    pub fn inbox(&self, node: &NodeId) -> String {
        format!("{}:{{n:{}}}:inbox", self.prefix, node)
    }

    pub fn user_nodes(&self, user: UserId) -> String {
        format!("{}:{{u:{}}}:nodes", self.prefix, user)
    }

    /// The keys the queue scripts take, in the order they expect them.
    pub fn queue_script_keys(&self) -> [&str; 5] {
        [
            &self.queue_entries,
            &self.queue_order,
            &self.queue_changes,
            &self.queue_seq,
            &self.queue_counts,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag Redis Cluster hashes: the text between the first `{` and the
    /// next `}`.
    fn hash_tag(key: &str) -> Option<&str> {
        let open = key.find('{')?;
        let close = key[open + 1..].find('}')? + open + 1;
        Some(&key[open + 1..close]).filter(|t| !t.is_empty())
    }

    #[test]
    fn keys_of_one_unit_share_a_tag() {
        let keys = Keys::new("io");
        for k in keys.queue_script_keys() {
            assert_eq!(hash_tag(k), Some("mq"), "{k}");
        }
        assert_eq!(hash_tag(&keys.lease_holder), hash_tag(&keys.lease_fence));
        assert_eq!(hash_tag(&keys.online), Some("online"));
        assert_eq!(
            keys.inbox(&NodeId("gw-1:8080".into())),
            "io:{n:gw-1:8080}:inbox"
        );
        let user = UserId::new();
        assert_eq!(
            hash_tag(&keys.user_nodes(user)),
            Some(format!("u:{user}").as_str())
        );
    }
}
