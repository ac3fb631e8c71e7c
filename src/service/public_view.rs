//! The public view of the invite graph: members who opted out (`hidden`)
//! appear as anonymous placeholders, so the tree keeps its shape but does not
//! say who they are. A placeholder is `hidden-` and 16 hex digits of an HMAC
//! (keyed from the server secret) of the member's internal id: stable across
//! calls and pages, so a client can attach a hidden member's invitees to it,
//! and not reversible to the user id without the key.

use crate::crypto::secret::{Secret, mac};
use crate::domain::Member;

#[derive(Clone)]
pub struct Placeholders {
    /// `None`: every hidden member is just `hidden` (no stable handle).
    key: Option<[u8; 32]>,
}

impl Placeholders {
    /// Keyed from the current server secret: stable as long as it is.
    pub fn new(secret: &Secret) -> Self {
        Self { key: Some(secret.derive("invitations/hidden-member/v1")) }
    }

    /// Without a key: safe (nothing to reverse), but a client cannot tell
    /// two hidden members apart. The server always configures a key.
    pub fn unkeyed() -> Self {
        Self { key: None }
    }

    /// The placeholder standing in for the member with this internal id.
    pub fn name(&self, id: i64) -> String {
        let Some(key) = &self.key else { return "hidden".to_owned() };
        let tag = mac(key, &[&id.to_be_bytes()]);
        let mut name = String::with_capacity(23);
        name.push_str("hidden-");
        for byte in &tag[..8] {
            name.push_str(&format!("{byte:02x}"));
        }
        name
    }

    /// The member as the public sees it: a hidden member becomes its
    /// placeholder (and loses its join time), an inviter who is hidden is
    /// named by its placeholder, and no one shows the invitation they came
    /// through. Invite privileges are never part of the public view (the
    /// transport leaves them out).
    pub fn publish(&self, m: &mut Member) {
        if m.hidden {
            m.user_id = self.name(m.id);
            m.join_time = None;
        }
        if m.parent_hidden {
            m.inviter_id = m.parent_id().map(|id| self.name(id));
        }
        m.invitation_id = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::InvitePrivileges;

    fn placeholders(secret: &str) -> Placeholders {
        Placeholders::new(&Secret::parse(secret).expect("long enough"))
    }

    fn member(id: i64, path: Vec<i64>, hidden: bool, parent_hidden: bool) -> Member {
        Member {
            id,
            user_id: format!("user-{id}"),
            inviter_id: (path.len() > 1).then(|| "inviter".to_owned()),
            join_time: Some(time::OffsetDateTime::UNIX_EPOCH),
            invitation_id: Some(uuid::Uuid::nil()),
            path,
            hidden,
            parent_hidden,
            privileges: InvitePrivileges {
                enabled: true,
                reason: String::new(),
                update_time: None,
                updated_by: String::new(),
            },
        }
    }

    #[test]
    fn placeholders_are_stable_distinct_and_keyed() {
        let p = placeholders("0123456789abcdef0123456789abcdef");
        assert_eq!(p.name(7), p.name(7));
        assert_ne!(p.name(7), p.name(8));
        assert!(p.name(7).starts_with("hidden-") && p.name(7).len() == 23);
        assert_ne!(p.name(7), placeholders("another secret that is long enough!!").name(7));
        assert_eq!(Placeholders::unkeyed().name(7), "hidden");
    }

    #[test]
    fn publish_hides_identity_and_keeps_structure() {
        let p = placeholders("0123456789abcdef0123456789abcdef");
        let mut hidden = member(5, vec![1, 5], true, false);
        p.publish(&mut hidden);
        assert_eq!(hidden.user_id, p.name(5));
        assert_eq!(hidden.join_time, None);
        assert_eq!(hidden.inviter_id.as_deref(), Some("inviter"), "a visible inviter stays named");
        assert_eq!(hidden.path, vec![1, 5]);

        let mut child = member(9, vec![1, 5, 9], false, true);
        p.publish(&mut child);
        assert_eq!(child.user_id, "user-9");
        assert_eq!(child.inviter_id, Some(p.name(5)), "points at the hidden parent's placeholder");
        assert_eq!(child.invitation_id, None);
    }
}
