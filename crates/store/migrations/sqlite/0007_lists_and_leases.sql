-- The operator's block and allow list entries, so they outlive a restart (and, in a
-- fleet, a Redis restarted empty). The CIDR is stored in its canonical text form;
-- expires_at (ms since the Unix epoch) is NULL for a permanent entry.
CREATE TABLE list_rules (
    kind TEXT NOT NULL,
    cidr TEXT NOT NULL,
    expires_at BIGINT,
    note TEXT NOT NULL,
    set_at BIGINT NOT NULL,
    PRIMARY KEY (kind, cidr)
);

-- Work one node of a fleet does for all (recording the status page): who holds it
-- and until when (ms since the Unix epoch). A holder that stops renewing loses it.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
