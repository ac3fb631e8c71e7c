//! How domain types are read from rows and bound as parameters: the
//! domain has no sqlx derives (`layers::the_domain_has_no_sqlx_derives`), so
//! its types stay plain and the mapping to columns lives with the SQL.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgRow, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, FromRow, Postgres, Row, Type};

use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::attributes::Attributes;
use crate::domain::email::BindingKind;
use crate::domain::events::InvitationOwner;
use crate::domain::{Invitation, InvitePrivileges, Member, Reservation, ReservationStatus};

use super::invitations::COLUMN_NAMES;

/// Decoded by position, in the order of `store::invitations::COLUMNS` (the
/// only column list any statement returns invitations with): a page of 50
/// rows of 21 columns costs a thousand hash lookups by name otherwise. Each
/// position's name is checked, so a column list in another order fails
/// loudly instead of swapping same-typed fields.
impl<'r> FromRow<'r, PgRow> for Invitation {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        use sqlx::Column;
        let columns = row.columns();
        for (index, name) in COLUMN_NAMES.iter().enumerate() {
            if columns.get(index).map(Column::name) != Some(*name) {
                return Err(sqlx::Error::ColumnNotFound(format!("{name} (expected at position {index})")));
            }
        }
        Ok(Self {
            id: row.try_get(0)?,
            code: String::new(),
            code_ciphertext: row.try_get(1)?,
            code_key_id: row.try_get(2)?,
            inviter_id: row.try_get(3)?,
            last_invitee_id: row.try_get(4)?,
            uses: row.try_get(5)?,
            max_uses: row.try_get(6)?,
            create_time: row.try_get(7)?,
            expire_time: row.try_get(8)?,
            last_redeem_time: row.try_get(9)?,
            batch_id: row.try_get(10)?,
            label: row.try_get(11)?,
            note: row.try_get(12)?,
            minted_by: row.try_get(13)?,
            revoke_time: row.try_get(14)?,
            revoke_reason: row.try_get(15)?,
            revoked_by: row.try_get(16)?,
            binding: row.try_get(17)?,
            binding_digest: row.try_get(18)?,
            abuse_flags: row.try_get(19)?,
            attributes: row.try_get(20)?,
        })
    }
}

/// Attributes are stored flat (`text[]` of key, value, key, value, …) and
/// decoded straight into the map, so `query_as!` fills `Invitation` itself.
impl Type<Postgres> for Attributes {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <Vec<String> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Attributes {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Attributes::from_stored(<Vec<String> as Decode<Postgres>>::decode(value)?))
    }
}

/// A member node as the graph's reads select it (`graph::member_node!`),
/// checked at compile time by `query_as!`.
pub struct MemberRow {
    pub id: i64,
    pub user_id: String,
    pub inviter_id: Option<String>,
    pub join_time: Option<OffsetDateTime>,
    pub invitation_id: Option<Uuid>,
    pub path: Vec<i64>,
    pub hidden: bool,
    pub parent_hidden: bool,
    pub invite_enabled: bool,
    pub invite_reason: String,
    pub invite_update_time: Option<OffsetDateTime>,
    pub invite_updated_by: String,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Self {
        Self {
            id: row.id,
            user_id: row.user_id,
            inviter_id: row.inviter_id,
            join_time: row.join_time,
            invitation_id: row.invitation_id,
            path: row.path,
            hidden: row.hidden,
            parent_hidden: row.parent_hidden,
            privileges: InvitePrivileges {
                enabled: row.invite_enabled,
                reason: row.invite_reason,
                update_time: row.invite_update_time,
                updated_by: row.invite_updated_by,
            },
        }
    }
}

impl<'r> FromRow<'r, PgRow> for Reservation {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            invitation_id: row.try_get("invitation_id")?,
            status: row.try_get("status")?,
            create_time: row.try_get("create_time")?,
            expire_time: row.try_get("expire_time")?,
            end_time: row.try_get("end_time")?,
            invitee_id: row.try_get("invitee_id")?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for InvitationOwner {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self { inviter_id: row.try_get("inviter_id")?, batch_id: row.try_get("batch_id")? })
    }
}

/// A Rust enum stored as a Postgres enum type, by its labels (what
/// `#[derive(sqlx::Type)]` with `rename_all = "lowercase"` did).
macro_rules! pg_enum {
    ($type:ty, $name:literal, $array:literal, { $($variant:path => $label:literal),+ $(,)? }) => {
        impl Type<Postgres> for $type {
            fn type_info() -> PgTypeInfo {
                PgTypeInfo::with_name($name)
            }
        }

        impl PgHasArrayType for $type {
            fn array_type_info() -> PgTypeInfo {
                PgTypeInfo::with_name($array)
            }
        }

        impl Encode<'_, Postgres> for $type {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let label = match self {
                    $($variant => $label),+
                };
                <&str as Encode<Postgres>>::encode(label, buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $type {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                match <&str as Decode<Postgres>>::decode(value)? {
                    $($label => Ok($variant),)+
                    other => Err(format!("{other:?} is not a {} label", $name).into()),
                }
            }
        }
    };
}

pg_enum!(ReservationStatus, "reservation_status", "_reservation_status", {
    ReservationStatus::Held => "held",
    ReservationStatus::Completed => "completed",
    ReservationStatus::Released => "released",
    ReservationStatus::Lapsed => "lapsed",
});

pg_enum!(BindingKind, "invitation_binding", "_invitation_binding", {
    BindingKind::Email => "email",
    BindingKind::Domain => "domain",
    BindingKind::Applicant => "applicant",
});
