-- Accounts. Phone numbers, e-mail addresses and TOTP secrets are stored only
-- encrypted (*_enc, AEAD blobs); lookups and uniqueness go through keyed blind
-- indexes (*_idx, HMAC), so the plain values never touch the database.
CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone_enc       BYTEA,
    phone_idx       BYTEA UNIQUE,
    phone_region    TEXT,
    email_enc       BYTEA,
    email_idx       BYTEA UNIQUE,
    password_hash   TEXT NOT NULL,
    status          TEXT NOT NULL,
    mfa_required    BOOLEAN NOT NULL DEFAULT FALSE,
    totp_secret_enc BYTEA,
    totp_last_step  BIGINT,
    created_at      BIGINT NOT NULL,
    verified_at     BIGINT
);

CREATE TABLE recovery_codes (
    user_id   BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash BYTEA NOT NULL,
    used_at   BIGINT,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE sessions (
    token_hash   BYTEA PRIMARY KEY NOT NULL,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  BYTEA NOT NULL,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    rpm_limit    BIGINT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_by_user ON api_keys(user_id);

CREATE TABLE verification_codes (
    user_id    BIGINT PRIMARY KEY NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code_hash  BYTEA NOT NULL,
    expires_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE invites (
    code_hash  BYTEA PRIMARY KEY NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_by    BIGINT REFERENCES users(id) ON DELETE SET NULL,
    used_at    BIGINT
);

-- Append-only record of security events. Never holds secrets or plain personal
-- data: actors are user ids, key prefixes or "operator".
CREATE TABLE audit_log (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    outcome TEXT NOT NULL,
    ip      TEXT,
    reason  TEXT,
    detail  TEXT
);
CREATE INDEX audit_by_time ON audit_log(at);
