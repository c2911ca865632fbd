-- Accounts. Phone numbers, e-mail addresses and TOTP secrets are stored only
-- encrypted (*_enc, AEAD blobs); lookups and uniqueness go through keyed blind
-- indexes (*_idx, HMAC), so the plain values never touch the database.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_enc       BLOB,
    phone_idx       BLOB UNIQUE,
    phone_region    TEXT,
    email_enc       BLOB,
    email_idx       BLOB UNIQUE,
    password_hash   TEXT NOT NULL,
    status          TEXT NOT NULL,
    mfa_required    INTEGER NOT NULL DEFAULT 0,
    totp_secret_enc BLOB,
    totp_last_step  INTEGER,
    created_at      INTEGER NOT NULL,
    verified_at     INTEGER
);

CREATE TABLE recovery_codes (
    user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BLOB NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    token_hash   BLOB PRIMARY KEY NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  BLOB NOT NULL,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    rpm_limit    INTEGER,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys(user_id);

CREATE TABLE verification_codes (
    user_id    INTEGER PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE invites (
    code_hash  BLOB PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_by    INTEGER REFERENCES users(id) ON DELETE SET NULL,
    used_at    INTEGER
);

-- Append-only record of security events. Never holds secrets or plain personal
-- data: actors are user ids, key prefixes or "operator".
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ip      TEXT,
    reason  TEXT,
    detail  TEXT
);
CREATE INDEX audit_by_time ON audit_log(at);
