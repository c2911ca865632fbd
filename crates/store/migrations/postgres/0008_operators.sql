-- Operators: the people who run the gateway, apart from its users (a user account
-- can never become one). Each has a role (viewer, operator, admin), a password
-- (argon2id PHC string) and a TOTP secret encrypted with the personal-data key.
-- Until enrolled, an operator has only a one-time setup code (its SHA-256).
CREATE TABLE operators (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    role             TEXT NOT NULL,
    password_hash    TEXT,
    totp_secret_enc  BYTEA,
    totp_last_step   BIGINT,
    setup_hash       BYTEA,
    setup_expires_at BIGINT,
    created_at       BIGINT NOT NULL,
    disabled_at      BIGINT
);

-- Short-lived operator tokens (SHA-256 of the token), from a login with password
-- and TOTP code.
CREATE TABLE operator_sessions (
    token_hash  BYTEA PRIMARY KEY NOT NULL,
    operator_id BIGINT NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions(operator_id);
