-- Keys BitGo's Advanced Wallet Manager stores with the key provider
-- (docs/bitgo.md): (pub, source) is the identity; `sealed` opens only in the
-- secure environment, and only for the row's own pub, source, type and coin.
CREATE TABLE provider_keys (
    pub                TEXT    NOT NULL CHECK (length(pub) > 0),
    source             TEXT    NOT NULL CHECK (source IN ('user', 'backup')),
    key_type           TEXT    NOT NULL CHECK (key_type IN ('independent', 'tss')),
    coin               TEXT    NOT NULL,
    master_key_version INTEGER NOT NULL,
    sealed             BLOB    NOT NULL,
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (pub, source)
) WITHOUT ROWID;
