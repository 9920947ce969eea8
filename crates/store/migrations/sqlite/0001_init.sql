-- Wallets: public metadata and the sealed blobs the secure environment wrote.
CREATE TABLE wallets (
    wallet_id          BLOB    NOT NULL PRIMARY KEY CHECK (length(wallet_id) = 16),
    key_type           TEXT    NOT NULL,
    public_key         BLOB,
    owner_public_key   BLOB,
    created_at         INTEGER NOT NULL,
    master_key_version INTEGER NOT NULL,
    wrapped_key        BLOB    NOT NULL,
    ciphertext         BLOB    NOT NULL
) WITHOUT ROWID;

-- Lets a re-wrap job find the wallets still under an old master key.
CREATE INDEX wallets_by_master_key_version ON wallets (master_key_version);

-- Import sessions: the sealed session key, expiry, and single use.
CREATE TABLE import_sessions (
    session_id   BLOB    NOT NULL PRIMARY KEY CHECK (length(session_id) = 16),
    sealed_state BLOB    NOT NULL,
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    completed_at INTEGER,
    wallet_id    BLOB
) WITHOUT ROWID;

CREATE INDEX import_sessions_by_expiry ON import_sessions (expires_at);
