-- kms-api's replica of the secure environment's audit chain: one signed
-- record per seq, as JSON (the format of GET /v1/audit, docs/audit-log.md).
CREATE TABLE audit_records (
    seq    INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    record TEXT    NOT NULL
);
