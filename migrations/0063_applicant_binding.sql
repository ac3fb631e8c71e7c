-- A third kind of binding: an invitation admitted from the waitlist is
-- redeemable only by the applicant it was admitted for. It replaces the
-- trigger of 0062 on every redemption (a PL/pgSQL call and an index probe
-- per redeem, bound or not): like the other bindings, it sends the one
-- round-trip statements to the general Redeem path, which checks it and
-- records the entry's redemption (store::waitlist::record_redemption).
-- The new label is used in 0064: a value added by ALTER TYPE cannot be used
-- in the transaction that adds it.
ALTER TYPE invitation_binding ADD VALUE 'applicant';
