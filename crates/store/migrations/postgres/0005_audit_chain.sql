-- A tamper-evident audit log: each entry carries its place in the chain (seq), the
-- hash of the entry before it and its own hash; audit_head is the chain's end, whose
-- row lock serialises appends; audit_checkpoints holds (seq, hash) pairs signed with
-- a key the database does not hold. Entries written before this migration are
-- chained by the first start after it (Store::migrate), in id order.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE INDEX audit_by_seq ON audit_log(seq);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      TEXT NOT NULL,
    at        BIGINT NOT NULL,
    signature TEXT NOT NULL
);
