-- What an account's trust tier is decided from, beyond its age (created_at):
-- a record of ordinary use (the first day it was used and how many distinct
-- days since; last_used_day, in days since the Unix epoch, makes counting a day
-- one conditional UPDATE), an operator's pin, and a cohort flag set when the
-- account was registered with others that all saturate their limits alike.
ALTER TABLE users ADD COLUMN first_used_at INTEGER;
ALTER TABLE users ADD COLUMN last_used_day INTEGER;
ALTER TABLE users ADD COLUMN used_days INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN tier_pin TEXT;
ALTER TABLE users ADD COLUMN flagged_at INTEGER;
ALTER TABLE users ADD COLUMN flag_reason TEXT;
CREATE INDEX users_by_flag ON users(flagged_at);
