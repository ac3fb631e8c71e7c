//! Events that cover many invitations of one change (minted, revoked,
//! expired): grouped by partition, so each stays in one ordered queue, and cut
//! at [`MAX_INVITATIONS_PER_EVENT`] invitations (docs/design.md, "Events",
//! says why minted events are grouped at all).

use std::collections::BTreeMap;

use super::*;
use crate::domain::code::display_form;

/// The minted events of one batch: per partition, grants by inviter, at most
/// [`MAX_INVITATIONS_PER_EVENT`] invitations each. All of `invitations`
/// belong to the batch (they share its attributes).
pub fn minted(invitations: &[Invitation], codes: Option<&CodeDisclosure>) -> Vec<Event> {
    let Some(first) = invitations.first() else { return vec![] };
    let time = now();
    let template = pb::Minted {
        batch_id: first.batch_id.to_string(),
        label: first.label.clone(),
        minted_by: first.minted_by.clone(),
        max_uses: first.max_uses as u32,
        expire_time: first.expire_time.map(timestamp),
        binding: binding_pb(first.binding) as i32,
        grants: vec![],
    };
    chunks_by_partition(invitations)
        .into_iter()
        .map(|(partition, chunk)| {
            let mut grants: Vec<pb::Grant> = vec![];
            for inv in chunk {
                let inviter = inv.inviter_id.clone().unwrap_or_default();
                if grants.last().is_none_or(|g| g.inviter_id != inviter) {
                    grants.push(pb::Grant { inviter_id: inviter, ..Default::default() });
                }
                let grant = grants.last_mut().expect("pushed above");
                grant.invitation_ids.push(inv.id.to_string());
                if let Some(disclosure) = codes {
                    let (code, link) = disclosed(&inv.code, disclosure);
                    grant.links.push(link);
                    grant.codes.push(code);
                }
            }
            let payload = Payload::Minted(pb::Minted { grants, ..template.clone() });
            Event::new(EventType::Minted, partition, time, payload)
        })
        .collect()
}

/// A code as minted events disclose it (with --events-include-codes): its
/// display form and its link.
pub(super) fn disclosed(code: &str, disclosure: &CodeDisclosure) -> (String, String) {
    let code = display_form(code, &disclosure.code_prefix);
    let link = disclosure.link_template.replace("{code}", &code);
    (code, link)
}

/// A Grant message's encoded `codes` and `links` entries (fields 3 and 4)
/// for one code: the parts of a minted event the one-statement Redeem's
/// grants take from the service (`inv_mint_grant`).
pub fn grant_code_fields(code: &str, disclosure: &CodeDisclosure) -> (Vec<u8>, Vec<u8>) {
    let (code, link) = disclosed(code, disclosure);
    let (mut code_field, mut link_field) = (Vec::new(), Vec::new());
    prost::encoding::string::encode(3, &code, &mut code_field);
    prost::encoding::string::encode(4, &link, &mut link_field);
    (code_field, link_field)
}

/// The revoked events of one Revoke call, for the invitations it changed.
pub fn revoked(invitations: &[Invitation], reason: &str, revoked_by: &str) -> Vec<Event> {
    let time = now();
    chunks_by_partition(invitations)
        .into_iter()
        .map(|(partition, chunk)| {
            let payload = Payload::Revoked(pb::Revoked {
                invitations: chunk.into_iter().map(invitation_ref).collect(),
                reason: reason.to_owned(),
                revoked_by: revoked_by.to_owned(),
            });
            Event::new(EventType::Revoked, partition, time, payload)
        })
        .collect()
}

/// The expired events for invitations the sweeper found past their expiry.
pub fn expired(invitations: &[Invitation]) -> Vec<Event> {
    let time = now();
    chunks_by_partition(invitations)
        .into_iter()
        .map(|(partition, chunk)| {
            let payload =
                Payload::Expired(pb::Expired { invitations: chunk.into_iter().map(invitation_ref).collect() });
            Event::new(EventType::Expired, partition, time, payload)
        })
        .collect()
}

/// Groups invitations by partition, then by owner (inviter, or none), and
/// packs whole owners into chunks of at most MAX_INVITATIONS_PER_EVENT; only
/// an owner with more than that is split.
fn chunks_by_partition(invitations: &[Invitation]) -> Vec<(i16, Vec<&Invitation>)> {
    let mut groups: BTreeMap<(i16, Option<&str>), Vec<&Invitation>> = BTreeMap::new();
    for inv in invitations {
        groups.entry((partition_for(inv), inv.inviter_id.as_deref())).or_default().push(inv);
    }
    let mut out: Vec<(i16, Vec<&Invitation>)> = vec![];
    for ((partition, _), owned) in groups {
        for piece in owned.chunks(MAX_INVITATIONS_PER_EVENT) {
            match out.last_mut() {
                Some((p, chunk)) if *p == partition && chunk.len() + piece.len() <= MAX_INVITATIONS_PER_EVENT => {
                    chunk.extend_from_slice(piece);
                }
                _ => out.push((partition, piece.to_vec())),
            }
        }
    }
    out
}

pub(super) fn invitation_ref(inv: &Invitation) -> pb::InvitationRef {
    pb::InvitationRef {
        invitation_id: inv.id.to_string(),
        inviter_id: inv.inviter_id.clone().unwrap_or_default(),
        batch_id: inv.batch_id.to_string(),
        expire_time: inv.expire_time.map(timestamp),
        uses: inv.uses as u32,
        max_uses: inv.max_uses as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::tests::invitation;

    fn decode(event: &Event) -> pb::InvitationEvent {
        pb::InvitationEvent::decode(event.payload.as_slice()).expect("decodes")
    }

    #[test]
    fn minted_covers_each_invitation_once_grouped_by_partition_and_inviter() {
        let batch = Uuid::now_v7();
        let mut invitations = vec![];
        for i in 0..300 {
            for _ in 0..3 {
                invitations.push(invitation(Some(&format!("user-{i}")), batch));
            }
        }
        invitations.extend((0..2500).map(|_| invitation(None, batch)));
        let events = minted(&invitations, None);
        let mut seen = std::collections::HashSet::new();
        for event in &events {
            let Some(Payload::Minted(m)) = decode(event).event else { panic!("a minted event") };
            assert_eq!(m.batch_id, batch.to_string());
            let count: usize = m.grants.iter().map(|g| g.invitation_ids.len()).sum();
            assert!(count <= MAX_INVITATIONS_PER_EVENT);
            for grant in &m.grants {
                assert!(grant.codes.is_empty() && grant.links.is_empty(), "no codes unless asked");
                let owner = (!grant.inviter_id.is_empty()).then_some(grant.inviter_id.as_str());
                assert_eq!(partition_of(owner, batch), event.partition);
                for id in &grant.invitation_ids {
                    assert!(seen.insert(id.clone()), "{id} twice");
                }
            }
            for grant in m.grants.iter().filter(|g| !g.inviter_id.is_empty()) {
                assert_eq!(grant.invitation_ids.len(), 3, "each inviter's invitations in one grant, never split");
            }
        }
        assert_eq!(seen.len(), invitations.len());
        // 2,500 unowned invitations share one partition: split in three.
        assert!(events.len() <= PARTITIONS as usize + 3, "{} events", events.len());
    }

    #[test]
    fn minted_shows_codes_and_links_only_when_disclosed() {
        let inv = invitation(Some("ayo"), Uuid::now_v7());
        let disclosure =
            CodeDisclosure { code_prefix: "INV".into(), link_template: "https://x.example/j?c={code}".into() };
        let events = minted(std::slice::from_ref(&inv), Some(&disclosure));
        let Some(Payload::Minted(m)) = decode(&events[0]).event else { panic!("a minted event") };
        assert_eq!(m.grants[0].codes, vec!["INV-ABCD-EFGH-JKMN-PQR2"]);
        assert_eq!(m.grants[0].links, vec!["https://x.example/j?c=INV-ABCD-EFGH-JKMN-PQR2"]);
        let plain = minted(std::slice::from_ref(&inv), None);
        assert!(!String::from_utf8_lossy(&plain[0].payload).contains("ABCDEFGH"));
    }
}
