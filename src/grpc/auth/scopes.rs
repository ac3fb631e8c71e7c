//! Which scope each RPC needs: ONE table, read by the authentication layer.
//!
//! Adding an RPC to `invitations.v1.InvitationService`? Add one line here.
//! A method missing from the table needs `admin` (deny by default), so a new
//! RPC is never open to sign-up or read callers by accident.

/// What a caller may do. `admin` may call everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Operators: Mint, Revoke, RegisterMembers, SetInvitePrivileges,
    /// Reparent, GetStats, ReviewWaitlistEntries, AdmitFromWaitlist,
    /// UpdateInvitation, RestoreInvitation.
    Admin,
    /// The sign-up flow: Redeem, CheckCode, Reserve, Release, JoinWaitlist,
    /// GetWaitlistEntry, RecordConversion.
    Signup,
    /// Reading: ListForUser, GetInviteGraph, WalkInviteForest.
    Read,
    /// The product acting for its members: CreateMemberInvitation.
    Member,
}

impl Scope {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "admin" => Ok(Scope::Admin),
            "signup" => Ok(Scope::Signup),
            "read" => Ok(Scope::Read),
            "member" => Ok(Scope::Member),
            other => Err(format!("unknown scope {other:?} (admin, signup, read, member)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Signup => "signup",
            Scope::Read => "read",
            Scope::Member => "member",
        }
    }
}

/// The service the table is about.
pub const SERVICE: &str = "invitations.v1.InvitationService";

/// Method of [`SERVICE`] → the scope it needs.
pub const METHOD_SCOPES: &[(&str, Scope)] = &[
    ("Mint", Scope::Admin),
    ("Revoke", Scope::Admin),
    ("Redeem", Scope::Signup),
    ("CheckCode", Scope::Signup),
    ("Reserve", Scope::Signup),
    ("Release", Scope::Signup),
    ("ListForUser", Scope::Read),
    ("GetInviteGraph", Scope::Read),
    ("WalkInviteForest", Scope::Read),
    ("RegisterMembers", Scope::Admin),
    ("SetInvitePrivileges", Scope::Admin),
    ("Reparent", Scope::Admin),
    ("GetStats", Scope::Admin),
    ("JoinWaitlist", Scope::Signup),
    ("GetWaitlistEntry", Scope::Signup),
    ("ReviewWaitlistEntries", Scope::Admin),
    ("AdmitFromWaitlist", Scope::Admin),
    ("UpdateInvitation", Scope::Admin),
    ("RestoreInvitation", Scope::Admin),
    ("CreateMemberInvitation", Scope::Member),
    ("RecordConversion", Scope::Signup),
    ("VoidConversion", Scope::Admin),
    ("ReviewRewards", Scope::Admin),
    ("EraseMember", Scope::Admin),
    ("ListHistory", Scope::Admin),
];

/// The scope a method of [`SERVICE`] needs; `admin` for any method not listed.
pub fn required(method: &str) -> Scope {
    METHOD_SCOPES.iter().find(|(m, _)| *m == method).map_or(Scope::Admin, |(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_methods_get_their_scope_and_others_need_admin() {
        assert_eq!(required("Redeem"), Scope::Signup);
        assert_eq!(required("ListForUser"), Scope::Read);
        assert_eq!(required("Mint"), Scope::Admin);
        assert_eq!(required("SomeFutureRpc"), Scope::Admin);
        assert_eq!(required(""), Scope::Admin);
    }

    #[test]
    fn every_listed_method_exists_in_the_contract() {
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let methods: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .filter(|s| s.name() == "InvitationService")
            .flat_map(|s| s.method.iter().map(|m| m.name().to_owned()))
            .collect();
        for (method, _) in METHOD_SCOPES {
            assert!(methods.iter().any(|m| m == method), "{method} is not an RPC of {SERVICE}");
        }
    }
}
