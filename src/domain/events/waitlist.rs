//! The waitlist's events: `waitlist.joined`, `waitlist.reviewed` and
//! `waitlist.admitted`, each partitioned by its applicant (a review of many
//! entries by its first), so one applicant's events leave in order.

use super::*;

/// What `waitlist.admitted` says about one admission.
pub struct Admitted<'a> {
    pub entry_id: Uuid,
    pub applicant_id: &'a str,
    pub invitation: &'a Invitation,
}

impl Event {
    /// An applicant joined (encoded before the statement that decides
    /// whether it is new; appended only if it is).
    pub fn waitlist_joined(entry_id: Uuid, applicant_id: &str, referrer: Option<&str>) -> Self {
        let payload = Payload::WaitlistJoined(pb::WaitlistJoined {
            entry_id: entry_id.to_string(),
            applicant_id: applicant_id.to_owned(),
            referrer: referrer.unwrap_or_default().to_owned(),
        });
        Self::new(EventType::WaitlistJoined, applicant_partition(applicant_id), now(), payload)
    }

    /// Entries changed by one review (`entries`: entry id and applicant).
    pub fn waitlist_reviewed(entries: &[(Uuid, String)], approved: bool, reason: &str, reviewed_by: &str) -> Self {
        let payload = Payload::WaitlistReviewed(pb::WaitlistReviewed {
            entry_ids: entries.iter().map(|(id, _)| id.to_string()).collect(),
            applicant_ids: entries.iter().map(|(_, a)| a.clone()).collect(),
            approved,
            reason: reason.to_owned(),
            reviewed_by: reviewed_by.to_owned(),
        });
        let partition = applicant_partition(entries.first().map_or("", |(_, a)| a.as_str()));
        Self::new(EventType::WaitlistReviewed, partition, now(), payload)
    }

    /// One admitted entry and its invitation; the code and link only with
    /// `disclosure` (`--events-include-codes`).
    pub fn waitlist_admitted(a: &Admitted<'_>, disclosure: Option<&CodeDisclosure>) -> Self {
        let inv = a.invitation;
        let (code, link) = match disclosure {
            Some(d) if !inv.code.is_empty() => grouped::disclosed(&inv.code, d),
            _ => (String::new(), String::new()),
        };
        let payload = Payload::WaitlistAdmitted(pb::WaitlistAdmitted {
            entry_id: a.entry_id.to_string(),
            applicant_id: a.applicant_id.to_owned(),
            invitation_id: inv.id.to_string(),
            inviter_id: inv.inviter_id.clone().unwrap_or_default(),
            batch_id: inv.batch_id.to_string(),
            expire_time: inv.expire_time.map(timestamp),
            code,
            link,
        });
        Self::new(EventType::WaitlistAdmitted, applicant_partition(a.applicant_id), now(), payload)
    }
}

/// The partition of an applicant's waitlist events.
pub fn applicant_partition(applicant_id: &str) -> i16 {
    partition_of(Some(&format!("waitlist:{applicant_id}")), Uuid::nil())
}
