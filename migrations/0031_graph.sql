-- The invite graph as a materialized path of numeric member ids, subtree
-- counters without hot rows, and the record of reparents
-- (docs/design.md, "Graph storage").

-- A small numeric id per member (user ids are up to 128 bytes): internal,
-- never shown. Inserts draw it from the sequence and set path = ARRAY[id]
-- for a new member (store::members); there is deliberately no default, so an
-- insert that forgets either fails.
CREATE SEQUENCE members_id_seq AS bigint;
ALTER TABLE members ADD COLUMN id bigint, ADD COLUMN path bigint[];
WITH numbered AS (SELECT user_id, row_number() OVER (ORDER BY create_time, user_id) AS id FROM members)
UPDATE members m SET id = numbered.id FROM numbered WHERE numbered.user_id = m.user_id;
SELECT setval('members_id_seq', coalesce(max(id), 0) + 1, false) FROM members;
ALTER SEQUENCE members_id_seq OWNED BY members.id;

-- path: the ids from the member's root down to the member itself. Ordering
-- by path is a depth-first walk; a subtree is one range of the index.
WITH RECURSIVE tree (user_id, path) AS (
    SELECT user_id, ARRAY[id] FROM members WHERE inviter_id IS NULL
    UNION ALL
    SELECT m.user_id, tree.path || m.id FROM members m JOIN tree ON m.inviter_id = tree.user_id)
UPDATE members m SET path = tree.path FROM tree WHERE tree.user_id = m.user_id;

ALTER TABLE members
    ALTER COLUMN id SET NOT NULL,
    ALTER COLUMN path SET NOT NULL,
    ADD CONSTRAINT members_id_key UNIQUE (id),
    ADD CONSTRAINT members_path_check CHECK (path[cardinality(path)] = id);
CREATE INDEX members_path_idx ON members (path);
-- Direct invitees in sibling order: a member's pages of direct invitees.
-- Keyed on path, not id, so that no plan can prefer walking the id index
-- and filtering on inviter_id (slow for an inviter whose invitees all have
-- high ids).
CREATE INDEX members_inviter_id_idx ON members (inviter_id, path);

-- Descendant and direct-invitee counts. Redeems never update a counter row
-- (that would serialize every redeem under a big root on its row): they
-- append deltas for each ancestor, and a background fold moves deltas into
-- member_counts in batches. A count is member_counts + the deltas not folded
-- yet, read in one statement, so it is exact whether or not the fold ran.
CREATE TABLE member_counts (
    member_id   bigint PRIMARY KEY,
    descendants bigint NOT NULL,
    invitees    bigint NOT NULL
);
CREATE TABLE member_count_deltas (
    member_id   bigint NOT NULL,
    descendants bigint NOT NULL,
    invitees    bigint NOT NULL
);
CREATE INDEX member_count_deltas_member_id_idx ON member_count_deltas (member_id);

INSERT INTO member_counts (member_id, descendants, invitees)
SELECT a.id, count(*), count(*) FILTER (WHERE a.ord = cardinality(m.path) - 1)
FROM members m, unnest(m.path[1:cardinality(m.path) - 1]) WITH ORDINALITY AS a(id, ord)
GROUP BY a.id;

-- Reparent: who moved whom, from where to where, why and when.
CREATE TABLE reparents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        text NOT NULL REFERENCES members (user_id),
    -- NULL: was / became a root.
    old_inviter_id text,
    new_inviter_id text,
    -- Members moved: the user and everyone below it.
    moved_count    bigint NOT NULL,
    reason         text NOT NULL DEFAULT '',
    reparented_by  text NOT NULL DEFAULT '',
    create_time    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reparents_user_id_idx ON reparents (user_id, id);
