-- Facts about this installation (schema owner, creation time, instance id).
CREATE TABLE palisade_meta (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
