//! The tables the PostgreSQL engine keeps, created on first use and
//! versioned: a database written by a newer schema is refused.
//!
//! ```text
//! ledger_meta        key → value: 'schema' → the schema version; 'listing' →
//!                    'partial' while ledger_listed misses executions settled
//!                    under schema 1; 'keys-deleted' → how many redactions
//!                    deleted keys since ledger_keys was last rewritten;
//!                    'tenant-hold/T' → tenant T's legal hold (JSON);
//!                    'archive-base' → the last archived seq and its hash
//! ledger_head        one row: the log's last seq and that record's hash
//! ledger_log         seq → record (record.rs), with the columns queries need:
//!                    execution, tenant, kind, at, and the per-tenant name the
//!                    event points at its execution (name_kind 'k' an
//!                    idempotency key, 'b' a binding target)
//! ledger_listed      seq of a settled execution's first event → its line in
//!                    the list of settled executions (execution, tenant,
//!                    callable, status, queued_ns: when it was submitted, in
//!                    nanoseconds since 1970), inserted with the event
//!                    that settles it (derived data, rebuilt by reindex)
//! ledger_keys        slot → a key that encrypts payloads: slot `seq` the
//!                    key of record `seq`'s payloads (format 3, record.rs;
//!                    the slot the record names is `seq` too, unless it
//!                    was imported from a ledger that numbered its keys
//!                    otherwise),
//!                    slot `-seq` the key of the snapshot at `seq`; a
//!                    redaction deletes its records' keys, which makes
//!                    what lingers of their payloads unreadable
//! ledger_snapshots   seq → the projection as of that seq (derived data),
//!                    encrypted under its key
//! ledger_leases      execution → its running attempt's lease, as renewed
//! ledger_acceptances a row for each time the log was accepted as it is
//! ```
//!
//! Every append moves `ledger_head` from the head it was decided against
//! and inserts its rows in one statement; a trigger on `ledger_head`
//! notifies `ledger_appended` with the new head's seq at commit.

/// The schema version this build writes and reads. Version 1 had no
/// `ledger_listed`: opening such a database adds it ([`UPGRADE_1`]);
/// version 2 had no `ledger_keys` ([`UPGRADE_2`]): its records and
/// snapshots hold payloads in the clear, which a redaction removes from
/// the rows but not from the dead row versions PostgreSQL keeps until it
/// vacuums them; version 3 could not archive ([`UPGRADE_3`]: an older
/// build would read an archived database's live log as damaged); version
/// 4 held no control entries ([`UPGRADE_4`]: their rows have no execution,
/// which an older build would take for damage).
pub(super) const VERSION: u32 = 5;

/// The table of keys and the index of redactions (in [`CREATE`] and
/// [`UPGRADE_2`]).
macro_rules! keys_table {
    () => {
        r#"
CREATE TABLE IF NOT EXISTS ledger_keys (
    slot bigint PRIMARY KEY,
    key bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_log_redacted ON ledger_log (seq) WHERE kind = 'redacted';
"#
    };
}

/// The table of settled executions' lines (in [`CREATE`] and [`UPGRADE_1`]).
macro_rules! listed_table {
    () => {
        r#"
CREATE TABLE IF NOT EXISTS ledger_listed (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    execution uuid NOT NULL,
    tenant text NOT NULL,
    callable text NOT NULL,
    status text NOT NULL,
    queued_ns bigint NOT NULL
);

"#
    };
}

/// Brings a version 1 database to version 2 (under [`CREATE_LOCK`]). The
/// executions it settled before are listed once the index is rebuilt (the
/// ledger does it when it opens the database, and clears `listing`).
pub(super) const UPGRADE_1: &str = concat!(
    listed_table!(),
    r#"
WITH upgraded AS (
    UPDATE ledger_meta SET value = '2' WHERE key = 'schema' AND value = '1' RETURNING 1
)
INSERT INTO ledger_meta (key, value) SELECT 'listing', 'partial' FROM upgraded
    ON CONFLICT DO NOTHING;
"#
);

/// Brings a version 2 database (one [`UPGRADE_1`] brought there too) to
/// version 3 (under [`CREATE_LOCK`]).
pub(super) const UPGRADE_2: &str = concat!(
    keys_table!(),
    "UPDATE ledger_meta SET value = '3' WHERE key = 'schema' AND value = '2';\n"
);

/// Brings a version 3 database to version 4: the tables stay; the base
/// of the live log ([`ARCHIVE_BASE`]) is kept in `ledger_meta` once
/// something is archived.
pub(super) const UPGRADE_3: &str =
    "UPDATE ledger_meta SET value = '4' WHERE key = 'schema' AND value = '3';\n";

/// Brings a version 4 database to version 5: a row of `ledger_log` may
/// hold a control entry (a pause, a resume), which belongs to no execution
/// and to one tenant or none.
pub(super) const UPGRADE_4: &str = "ALTER TABLE ledger_log ALTER COLUMN execution DROP NOT NULL, \
     ALTER COLUMN tenant DROP NOT NULL;\n\
     UPDATE ledger_meta SET value = '5' WHERE key = 'schema' AND value = '4';\n";

/// The `ledger_meta` key of the live log's base, once anything is
/// archived: the last archived seq and its record's hash in hex, `SEQ HASH`.
pub(super) const ARCHIVE_BASE: &str = "archive-base";

/// A key of `pg_advisory_xact_lock` that serializes creating the schema.
pub(super) const CREATE_LOCK: i64 = 0x6c65_6467_6572; // "ledger"

/// The channel appends are announced on.
pub(super) const CHANNEL: &str = "ledger_appended";

/// Whether the ledger's tables exist, read from `pg_class` with the
/// statement's own snapshot (a lookup by name, such as `to_regclass`, can
/// answer from the session's cache of names it did not find, and miss a
/// table another session created meanwhile).
pub(super) const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relname = 'ledger_meta' AND n.nspname = current_schema())";

/// Creates the tables that are missing (run in one transaction, under
/// [`CREATE_LOCK`]).
pub(super) const CREATE: &str = concat!(
    r#"
CREATE TABLE IF NOT EXISTS ledger_meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_head (
    id int PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL CHECK (seq >= 0),
    hash bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_log (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    execution uuid,
    tenant text,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    name_kind "char",
    name text,
    record bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_log_execution ON ledger_log (execution, seq);
CREATE INDEX IF NOT EXISTS ledger_log_name ON ledger_log (tenant, name_kind, name, seq)
    WHERE name IS NOT NULL;
"#,
    listed_table!(),
    keys_table!(),
    r#"CREATE TABLE IF NOT EXISTS ledger_snapshots (
    seq bigint PRIMARY KEY,
    bytes bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_leases (
    execution uuid PRIMARY KEY,
    attempt int NOT NULL,
    until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_acceptances (
    at text NOT NULL,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    problem text NOT NULL
);
CREATE OR REPLACE FUNCTION ledger_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_appended', NEW.seq::text);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER ledger_head_notify AFTER UPDATE ON ledger_head
    FOR EACH ROW EXECUTE FUNCTION ledger_notify();
INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;
"#
);

/// The common table expression that inserts the lines of the executions
/// that appended events settle, from the parameters numbered (their
/// columns as arrays), where `$where` holds.
macro_rules! insert_listed {
    ($a:literal, $b:literal, $c:literal, $d:literal, $e:literal, $f:literal, $where:literal) => {
        concat!(
            "listed AS (INSERT INTO ledger_listed (seq, execution, tenant, callable, status, queued_ns) ",
            "SELECT * FROM unnest($", $a, "::int8[], $", $b, "::uuid[], $", $c, "::text[], $", $d,
            "::text[], $", $e, "::text[], $", $f, "::int8[]) ",
            $where,
            // A line left at its seq (by a restore, or damage) is replaced:
            // the execution still settles.
            " ON CONFLICT (seq) DO UPDATE SET execution = EXCLUDED.execution, tenant = EXCLUDED.tenant, ",
            "callable = EXCLUDED.callable, status = EXCLUDED.status, queued_ns = EXCLUDED.queued_ns)"
        )
    };
}

/// The common table expression that inserts the keys of appended
/// records (`$a` their slots, `$b` the keys), where `$where` holds.
macro_rules! insert_keys {
    ($a:literal, $b:literal, $where:literal) => {
        concat!(
            "keyed AS (INSERT INTO ledger_keys (slot, key) SELECT * FROM unnest($",
            $a,
            "::int8[], $",
            $b,
            "::bytea[]) ",
            $where,
            ")"
        )
    };
}

/// Inserts a group's rows (`$1`… the log's columns as arrays, `$9`… the
/// settled executions' lines, `$15`, `$16` the records' keys), while the
/// group holds the head row.
pub(super) const INSERT: &str = concat!(
    "WITH ",
    insert_listed!(9, 10, 11, 12, 13, 14, ""),
    ", ",
    insert_keys!(15, 16, ""),
    r#"
INSERT INTO ledger_log (seq, execution, tenant, kind, at, name_kind, name, record)
SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                     $6::"char"[], $7::text[], $8::bytea[])
"#
);

/// Appends rows if the head is still the one the append was decided
/// against: `$1`, `$2` the head it was decided against, `$3`, `$4` the
/// new head, `$5`… the rows' columns as arrays, `$13`… the lines of the
/// executions they settle, `$19`, `$20` the records' keys. Moving the head locks its row, so appends
/// commit one at a time, in seq order; an append decided against an older
/// head finds the row moved and inserts nothing.
pub(super) const APPEND: &str = concat!(
    r#"
WITH moved AS (
    UPDATE ledger_head SET seq = $3, hash = $4
    WHERE id = 1 AND seq = $1 AND hash = $2
    RETURNING 1
), "#,
    insert_listed!(13, 14, 15, 16, 17, 18, "WHERE EXISTS (SELECT 1 FROM moved)"),
    ", ",
    insert_keys!(19, 20, "WHERE EXISTS (SELECT 1 FROM moved)"),
    r#"
INSERT INTO ledger_log (seq, execution, tenant, kind, at, name_kind, name, record)
SELECT r.seq, r.execution, r.tenant, r.kind, r.at, r.name_kind, r.name, r.record
FROM unnest($5::int8[], $6::uuid[], $7::text[], $8::text[], $9::timestamptz[],
            $10::"char"[], $11::text[], $12::bytea[])
    AS r(seq, execution, tenant, kind, at, name_kind, name, record)
WHERE EXISTS (SELECT 1 FROM moved)
"#
);

/// Writes settled executions' lines again (`$1`… their columns as arrays),
/// replacing those at their seqs: a rebuild of the list.
pub(super) const RELIST: &str = concat!("WITH ", insert_listed!(1, 2, 3, 4, 5, 6, ""), " SELECT 1");

/// Settled executions' lines submitted before `$1`, newest first, `$2` at
/// most.
pub(super) const LISTED: &str = "SELECT seq, execution, tenant, callable, status, queued_ns \
     FROM ledger_listed WHERE seq < $1 ORDER BY seq DESC LIMIT $2";

/// Stores a snapshot (`$1` its seq, `$2` its bytes, encrypted under `$3`,
/// its key) unless a redaction was appended after its seq: the snapshot
/// may hold the payloads of the execution redacted (a redaction removes
/// the snapshots taken while its execution was live, [`STRIP`], and one
/// written later must not bring them back). Run after the head row is
/// locked (a group's own, or `FOR SHARE`), so that a redaction either is
/// seen here or commits after this and removes it.
pub(super) const SNAPSHOT: &str = "WITH keyed AS (\
     INSERT INTO ledger_keys (slot, key) \
     SELECT -$1::int8, $3::bytea \
     WHERE NOT EXISTS (SELECT 1 FROM ledger_log WHERE kind = 'redacted' AND seq > $1::int8) \
     ON CONFLICT (slot) DO UPDATE SET key = EXCLUDED.key RETURNING 1) \
     INSERT INTO ledger_snapshots (seq, bytes) SELECT $1::int8, $2::bytea FROM keyed \
     ON CONFLICT (seq) DO UPDATE SET bytes = EXCLUDED.bytes";

/// Removes what redactions forget (run in the transaction that appends
/// them, after it holds the head row): rewrites records `$1` without
/// their payloads (`$2`), removes the snapshots from seq `$3[i]` to
/// `$4[i]` (taken while a redacted execution was live), and deletes the
/// keys of both; its count is the keys deleted. It also counts, in
/// [`KEYS_DELETED`], that `ledger_keys` is owed a rewrite.
pub(super) const STRIP: &str = r#"
WITH owed AS (
    INSERT INTO ledger_meta (key, value) VALUES ('keys-deleted', '1')
    ON CONFLICT (key) DO UPDATE SET value = (ledger_meta.value::int8 + 1)::text
), stripped AS (
    UPDATE ledger_log l SET record = s.record
    FROM unnest($1::int8[], $2::bytea[]) AS s(seq, record) WHERE l.seq = s.seq
), dropped AS (
    DELETE FROM ledger_snapshots s USING unnest($3::int8[], $4::int8[]) AS r(lo, hi)
    WHERE s.seq BETWEEN r.lo AND r.hi RETURNING s.seq
)
DELETE FROM ledger_keys WHERE slot = ANY($1::int8[]) OR slot IN (SELECT -seq FROM dropped)
"#;

/// The `ledger_meta` key that counts the redactions whose deleted keys may
/// still be in `ledger_keys`' files: a rewrite (`VACUUM FULL`) removes it
/// if no redaction counted meanwhile, and a ledger that opens the database
/// and finds it runs one.
pub(super) const KEYS_DELETED: &str = "keys-deleted";
