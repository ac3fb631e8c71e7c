-- Members as the minting policies and the invite graph see them
-- (docs/design.md, "Members").
--
-- join_time: when the user joined the product. Set by RegisterMembers (users
-- who joined by other routes) or by Redeem (the redeem time). NULL means the
-- service only knows the user as the owner of minted invitations: it was
-- never told when (or whether) they joined, and policies that count from the
-- join time skip them.
ALTER TABLE members
    -- Opted out of the public invite tree: shown there as an anonymous
    -- placeholder (structure kept, identity hidden).
    ADD COLUMN hidden             boolean NOT NULL DEFAULT false,
    -- Invite privileges (SetInvitePrivileges). While false the member cannot
    -- receive invitations and their unspent ones cannot be redeemed,
    -- reserved or pass CheckCode (INVITER_DISABLED).
    ADD COLUMN invite_enabled     boolean NOT NULL DEFAULT true,
    -- Why, when and by whom invite_enabled was last set ('' / NULL: never).
    ADD COLUMN invite_reason      text NOT NULL DEFAULT '',
    ADD COLUMN invite_update_time timestamptz,
    ADD COLUMN invite_updated_by  text NOT NULL DEFAULT '';
