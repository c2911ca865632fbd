-- An unverified account claims its phone or e-mail without holding it: the claim
-- lives in pending_*_idx (not unique), and moves to the unique *_idx column when
-- the account proves it, so the first to verify gets the number and a typed-in
-- number cannot be squatted.
ALTER TABLE users ADD COLUMN pending_phone_idx BYTEA;
ALTER TABLE users ADD COLUMN pending_email_idx BYTEA;
UPDATE users SET pending_phone_idx = phone_idx, phone_idx = NULL WHERE status = 'unverified';
UPDATE users SET pending_email_idx = email_idx, email_idx = NULL WHERE status = 'unverified';
CREATE INDEX users_by_pending_phone ON users(pending_phone_idx);
CREATE INDEX users_by_pending_email ON users(pending_email_idx);

-- One code per account and purpose ('verify' the phone or address, 'reset' the
-- password); its guess budget lasts a window, across resends.
ALTER TABLE verification_codes ADD COLUMN purpose TEXT NOT NULL DEFAULT 'verify';
ALTER TABLE verification_codes ADD COLUMN window_started_at BIGINT NOT NULL DEFAULT 0;
