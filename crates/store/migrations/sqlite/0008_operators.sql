-- Operators: the people who run the gateway, apart from its users (a user account
-- can never become one). Each has a role (viewer, operator, admin), a password
-- (argon2id PHC string) and a TOTP secret encrypted with the personal-data key.
-- Until enrolled, an operator has only a one-time setup code (its SHA-256).
CREATE TABLE operators (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL UNIQUE,
    role             TEXT NOT NULL,
    password_hash    TEXT,
    totp_secret_enc  BLOB,
    totp_last_step   INTEGER,
    setup_hash       BLOB,
    setup_expires_at INTEGER,
    created_at       INTEGER NOT NULL,
    disabled_at      INTEGER
);

-- Short-lived operator tokens (SHA-256 of the token), from a login with password
-- and TOTP code.
CREATE TABLE operator_sessions (
    token_hash  BLOB PRIMARY KEY NOT NULL,
    operator_id INTEGER NOT NULL REFERENCES operators(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX operator_sessions_by_operator ON operator_sessions(operator_id);
