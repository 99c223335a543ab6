//! The command line: the arguments, how their values are read, and the
//! errors that set the exit code.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use execution_ledger::{
    At, BackgroundExecutionMode, BackgroundExecutionStatus, Cursor, ExecutionId, ListPage,
    TenantId, DEFAULT_LEASE, MAX_LEASE, MAX_WEIGHT, MIN_LEASE,
};

/// An event-sourced ledger of background executions: audit, time travel,
/// verify, and run.
#[derive(Debug, Parser)]
#[command(name = "ledger", version, propagate_version = true)]
pub(crate) struct Cli {
    /// The ledger's data directory. Only submit, run, serve and import
    /// create a ledger there; other commands need one.
    #[arg(
        long,
        global = true,
        env = "LEDGER_DATA_DIR",
        default_value = "ledger-data"
    )]
    pub(crate) data_dir: PathBuf,
    /// The ledger's PostgreSQL database, instead of a data directory:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE. Any number of
    /// processes share it; commands open it themselves (no server needed).
    #[arg(
        long,
        global = true,
        env = "LEDGER_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        value_parser = parse_database
    )]
    pub(crate) database: Option<String>,
    /// Where the archive's segments are, when they were moved from
    /// DATA_DIR/archive: read (history, show, verify) and added to there.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// Print JSON for machines instead of tables for people.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Act as this tenant: other tenants' executions are not found.
    #[arg(long, global = true, value_parser = parse_tenant)]
    pub(crate) tenant: Option<TenantId>,
    /// Reach the ledger through this `ledger serve` URL (found on its own
    /// when the data directory is being served).
    #[arg(long, global = true, env = "LEDGER_SERVER", value_parser = parse_server)]
    pub(crate) server: Option<String>,
    /// The API key for the server.
    #[arg(long, global = true, env = "LEDGER_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Where the ledger is: `--database`, else `--data-dir`.
    pub(crate) fn location(&self) -> PathBuf {
        match &self.database {
            Some(url) => PathBuf::from(url),
            None => self.data_dir.clone(),
        }
    }

    /// The data directory, when the ledger is in one (not `--database`).
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        self.database.is_none().then_some(self.data_dir.as_path())
    }

    /// How the ledger is opened here: where it is, and its archive.
    pub(crate) fn builder(&self) -> execution_ledger::LedgerBuilder {
        let builder = execution_ledger::Ledger::builder(self.location());
        match &self.archive {
            Some(dir) => builder.archive(dir),
            None => builder,
        }
    }
}

/// What `pause` and `resume` name besides `--tenant`.
#[derive(Debug, clap::Args)]
pub(crate) struct PauseArgs {
    /// The callable whose work it holds (of --tenant only, when given).
    #[arg(long)]
    pub(crate) callable: Option<String>,
    /// Why, recorded in the log.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Who asks, recorded in the log.
    #[arg(long)]
    pub(crate) by: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Submit an execution; prints its id.
    Submit(SubmitArgs),
    /// Recurring submissions of one tenant (`--tenant`): each slot of a
    /// cron expression fires one execution, whose `queued` event names the
    /// schedule and the slot — never two for one slot, across restarts and
    /// processes. `ledger serve` and `ledger run` fire them.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
    },
    /// Claim the next runnable execution (it becomes running); prints its id.
    Claim {
        /// Who claims it, recorded in the `started` event.
        #[arg(long, default_value = "cli")]
        worker: String,
        /// Only executions of this callable (repeatable; any, by default,
        /// on a ledger opened here). Through a server, a claim names the
        /// callables it runs.
        #[arg(long = "callable", value_name = "NAME")]
        callables: Vec<String>,
        /// Hold the attempt under a lease of this many milliseconds (through
        /// a server: 30000 by default). Without one, on a ledger opened here,
        /// the attempt is held until it is answered or the ledger is next
        /// opened by another process.
        #[arg(long, value_parser = lease_ms())]
        lease_ms: Option<u64>,
    },
    /// Complete a running execution's current attempt.
    Complete {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
        /// Its output, as JSON.
        #[arg(long, value_parser = parse_json)]
        output: Option<serde_json::Value>,
    },
    /// Fail a running execution's current attempt (retried by its policy).
    Fail {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
        /// What went wrong.
        #[arg(long)]
        error: String,
        /// A machine-readable code.
        #[arg(long, default_value = "failed")]
        code: String,
    },
    /// Cancel a queued or running execution.
    Cancel {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Redact a settled execution's payloads (input, output, context and
    /// metadata values, error messages): they read "[redacted]" from then
    /// on, and the lifecycle and the hash chain stay.
    Redact(RetainArgs),
    /// Put an execution, or with --whole-tenant all of a tenant's, under
    /// legal hold: none is redacted until the hold is released.
    Hold(HoldArgs),
    /// Release an execution's legal hold, or with --whole-tenant a
    /// tenant's.
    ReleaseHold(HoldArgs),
    /// List the tenants under legal hold.
    Holds,
    /// Set a tenant's fair share of the workers: its weight against the
    /// other tenants with work at the same priority (it takes WEIGHT claims
    /// to each one of a tenant of weight 1) and how many of its attempts
    /// may run at once (its work beyond that waits, in order). What is not
    /// given takes its default (weight 1, no limit); --reset puts both
    /// back. Claims follow it from the next one on.
    #[command(group(clap::ArgGroup::new("share").required(true).multiple(true).args(["weight", "limit", "reset"])))]
    Share {
        /// The tenant.
        #[arg(value_name = "TENANT", value_parser = parse_tenant)]
        of: TenantId,
        /// Its weight, 1 to 100.
        #[arg(long, value_parser = parse_weight)]
        weight: Option<u32>,
        /// At most this many of its attempts running at once (1 or more).
        #[arg(long, value_parser = parse_limit)]
        limit: Option<u32>,
        /// Back to weight 1 and no limit.
        #[arg(long, conflicts_with_all = ["weight", "limit"])]
        reset: bool,
    },
    /// List the tenants' fair shares (a tenant not listed has weight 1 and
    /// no limit).
    Shares,
    /// Pause work: no claim takes it until it is resumed; it stays queued,
    /// in order, and `ledger queue` lists it with the pause; attempts
    /// already running finish. Names a callable (--callable, of every
    /// tenant), a tenant (--tenant, all its work) or both; recorded in
    /// the log with who asked and why.
    Pause(PauseArgs),
    /// Resume paused work: the --callable and --tenant the pause named.
    Resume(PauseArgs),
    /// The pauses in force, now or at a point in the log.
    Pauses {
        #[command(flatten)]
        at: AtArgs,
    },
    /// Apply a retention policy now: redact the payloads of the settled
    /// executions kept longer after settling than their tenant's policy
    /// allows (legal holds, an execution's or a whole tenant's, win), then
    /// move the oldest settled history due into the archive
    /// (DATA_DIR/archive); prints what it did. A policy is JSON:
    /// {"tenants": {"acme": {"redactAfter": "30d", "archiveAfter": "90d",
    /// "hold": "why"}}, "default": {"redactAfter": "90d"}}.
    Retain {
        /// The policy (default: DATA_DIR/retention.json).
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Count what it would redact, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run a failed, timed-out or cancelled execution again, as a new
    /// execution (its `queued` event names the one it retries, and that
    /// one records a `retried` event: who asked, why, the attempts the new
    /// run gets); prints the new run's id. With a filter instead of an id,
    /// retries every execution that passes it and was not retried before.
    #[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["id", "status", "callable", "since", "until"])))]
    Retry {
        /// The execution.
        #[arg(value_parser = parse_id, conflicts_with_all = ["status", "callable", "since", "until"])]
        id: Option<ExecutionId>,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
        /// Who asks (recorded; default: the user running the command).
        #[arg(long)]
        by: Option<String>,
        /// The attempts the new run gets (default: as many as its retry
        /// policy gave the execution).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        attempts: Option<u32>,
        /// Every execution of these statuses (failed, timeout, cancelled;
        /// comma-separated or repeated; default: all three).
        #[arg(long, value_delimiter = ',', value_parser = parse_status)]
        status: Vec<BackgroundExecutionStatus>,
        /// Only this callable's.
        #[arg(long)]
        callable: Option<String>,
        /// Only those submitted at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only those submitted before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Say how many it would retry, and change nothing.
        #[arg(long, conflicts_with = "id")]
        dry_run: bool,
    },
    /// Release a held deferred execution: it becomes runnable.
    Release {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
    },
    /// Show an execution's record, now or at a point in the log.
    Show {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
        #[command(flatten)]
        at: AtArgs,
    },
    /// An execution's events, in order.
    History {
        /// The execution.
        #[arg(value_parser = parse_id)]
        id: ExecutionId,
    },
    /// Executions, newest first, filtered; one page at a time (the next
    /// page's --cursor is printed after it, on stderr).
    List {
        /// Only these statuses (queued, running, completed, failed,
        /// cancelled, timeout; comma-separated or repeated). Another
        /// tenant's executions: see --tenant.
        #[arg(long, value_delimiter = ',', value_parser = parse_status)]
        status: Vec<BackgroundExecutionStatus>,
        /// Only this callable's.
        #[arg(long)]
        callable: Option<String>,
        /// Only those submitted at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Only those submitted before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Only this execution.
        #[arg(long, value_parser = parse_id)]
        id: Option<ExecutionId>,
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = ListPage::DEFAULT_LEN as u64,
              value_parser = clap::value_parser!(u64).range(1..=ListPage::MAX_LEN as u64))]
        limit: u64,
        /// Where to start: the cursor a page printed after it.
        #[arg(long, value_parser = parse_cursor)]
        cursor: Option<Cursor>,
    },
    /// The runnable executions in claim order, now or at a point in the log.
    Queue {
        #[command(flatten)]
        at: AtArgs,
    },
    /// Events of the whole log.
    Events {
        /// The first seq.
        #[arg(long, default_value_t = 1)]
        from_seq: u64,
        /// The last seq.
        #[arg(long)]
        to_seq: Option<u64>,
        /// After the last, wait for new events and print them as they come.
        #[arg(long, conflicts_with = "to_seq")]
        follow: bool,
    },
    /// Which executions changed between two seqs, and how.
    Diff {
        /// The first point.
        #[arg(long)]
        from_seq: u64,
        /// The second point.
        #[arg(long)]
        to_seq: u64,
    },
    /// Check the whole log: exit 0 when intact, 1 naming the first bad seq
    /// (or the checkpoint, when it is missing or damaged).
    Verify {
        /// Accept the log as it is when its checkpoint is missing, damaged
        /// or disagrees with it (events lost from the tail): after checking
        /// the whole chain, write a new checkpoint at the log's last seq,
        /// print what was accepted and record it in `checkpoint.accepted`
        /// beside the checkpoint. Then verify as usual.
        #[arg(long)]
        accept_tail: bool,
        /// Also check that the log still leads to a head kept elsewhere:
        /// FILE holds what `ledger head --json` printed then. The tail is
        /// protected by the ledger's checkpoint, which lives beside the log
        /// (in a database, its head row); a head kept elsewhere protects it
        /// from whoever can rewrite both.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Also check that the log (or with --export, the export) leads to a
        /// head kept elsewhere, given as SEQ:HASH (`ledger head` prints both).
        #[arg(long, value_name = "SEQ:HASH", conflicts_with = "checkpoint")]
        head: Option<String>,
        /// Check an export (`ledger export > FILE`; `-` reads standard input)
        /// alone, without a ledger: each record against its hash and its
        /// payloads' digests, the chain from the genesis with no seq missing,
        /// and each line's event against its record.
        #[arg(long, value_name = "FILE", conflicts_with = "accept_tail")]
        export: Option<PathBuf>,
    },
    /// Rebuild the per-execution and name index from the log (after
    /// `verify` reports it damaged, or to move a ledger written with the
    /// older one-entry-per-event index); writes wait while it runs.
    Reindex,
    /// The last seq and its hash.
    Head,
    /// Figures about the ledger.
    Stats,
    /// The whole log as JSON lines, each event with its record, the hash of
    /// the one before and its own (`verify --export FILE` checks it alone).
    Export,
    /// Build a new ledger (in --data-dir, or the database of --database)
    /// from an export: checks the whole export first, as
    /// `verify --export` does, then stores each record as the export holds
    /// it — the same hashes, so the new ledger's head is the export's —
    /// and verifies the ledger it built. Nothing is written when the
    /// export does not verify.
    Import {
        /// The export (`ledger export > FILE`; `-` reads standard input).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Also check that the export leads to a head kept elsewhere: FILE
        /// holds what `ledger head --json` printed then.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Also check that the export leads to a head kept elsewhere, given
        /// as SEQ:HASH (`ledger head` prints both).
        #[arg(long, value_name = "SEQ:HASH", conflicts_with = "checkpoint")]
        head: Option<String>,
    },
    /// Run executions with the built-in callables echo, sleep and fail.
    ///
    /// While it runs it serves the HTTP API on 127.0.0.1 (a free port,
    /// written to DATA_DIR/serve.json), so the other `ledger` commands, and
    /// workers of other callables (`ledger worker`), reach the ledger
    /// through it. As `ledger serve` without --keys, every request acts as
    /// admin: anyone who can reach the loopback port can.
    ///
    /// SIGTERM or Ctrl-C (SIGINT) stops it: no more claims, running attempts
    /// get --grace-secs to finish, then it exits 0. An attempt still running
    /// after the grace is dropped unrecorded: it stays `running` in the log,
    /// and the next `ledger run` or `ledger serve` of this ledger records it
    /// `recovered` — queued again while it has attempts left, `failed`
    /// otherwise (the default is one attempt). On a database (--database)
    /// every attempt is leased, and any process records it once its lease
    /// runs out.
    Run {
        /// How many run at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: u16,
        /// On SIGTERM or Ctrl-C, how long running attempts may take to finish.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=3600))]
        grace_secs: u16,
        /// Exit once nothing is runnable, running or awaiting a callback,
        /// and nothing waiting for a retry or run-at time is due within the
        /// next 10 s: work due sooner is waited for and run; work due later
        /// is left queued for a later run, and how many and the earliest
        /// time are printed. Held deferred executions do not count, nor do
        /// executions of callables no live worker runs (left queued, and
        /// named).
        #[arg(long)]
        exit_when_idle: bool,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Hold each attempt its workers run under a lease of this many
        /// milliseconds, renewed every third of it: when this process stops,
        /// the others sharing its database take its attempts back once
        /// their leases run out (default on a database: 30000; on a data
        /// directory, none: recovered when the ledger is next opened).
        #[arg(long, value_parser = lease_ms())]
        lease_ms: Option<u64>,
        /// Sign every callback with its tenant's secret (the
        /// `Ledger-Signature` header): {"secrets": {"acme": ["NEW", "OLD"],
        /// "*": ["…"]}}, "*" for the tenants not named, each secret 16 bytes
        /// or more. Each delivery is
        /// signed with every secret its tenant has, so a rotation lists the
        /// new beside the old; the file is re-read within a second of a
        /// change. A tenant with no secret (and no default) gets no unsigned
        /// callback: the attempt is recorded as failed.
        #[arg(long, value_name = "FILE")]
        callback_secrets: Option<PathBuf>,
    },
    /// Measure the ledger against raw sled in the same run, and print each
    /// figure, its baseline and their ratio against the target.
    ///
    /// With --database URL, the PostgreSQL scenarios run too (`--only
    /// postgres`): each round in a database of its own, created through
    /// that server and dropped afterwards (the URL's user needs CREATEDB);
    /// the URL's own database is not touched.
    Bench {
        /// Smaller sizes: under about 20 seconds.
        #[arg(long, conflicts_with = "full")]
        quick: bool,
        /// The sizes of benches/README.md (1M events; minutes).
        #[arg(long)]
        full: bool,
        /// Where to build the benchmark ledgers (default: a temporary
        /// directory under the data directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Only these scenarios (comma-separated), e.g. `--only durable,http`.
        #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS))]
        only: Vec<String>,
        /// The peers' figures from the same sitting (the JSON lines their
        /// harnesses in ../shared/peers print; `benches/side-by-side.sh`
        /// runs them): the peer-workload scenarios then run the peers' N
        /// and are held to their targets against them.
        #[arg(long, value_name = "FILE")]
        peers: Option<PathBuf>,
    },
    /// (internal) The memory probe `bench` runs in a fresh process.
    #[command(hide = true)]
    BenchProbe {
        /// The ledger to open.
        dir: PathBuf,
    },
    /// (internal) One of the appending processes of `bench`'s PostgreSQL
    /// scenario: synced submits from threads, starting at a given time.
    #[command(hide = true)]
    BenchAppend {
        /// Threads submitting at once.
        #[arg(long, default_value_t = 64)]
        submitters: u64,
        /// Submits in all.
        #[arg(long)]
        count: u64,
        /// When to start, in unix milliseconds.
        #[arg(long)]
        start_at: u64,
    },
    /// Run the workers and serve the ledger over HTTP (JSON API, SSE);
    /// other `ledger` commands then reach the ledger through it.
    ///
    /// SIGTERM or Ctrl-C (SIGINT) stops it: new requests get 503, running
    /// attempts get --grace-secs to finish, then it exits 0. An attempt still
    /// running after the grace is dropped unrecorded: it stays `running` in
    /// the log, and the next `ledger serve` or `ledger run` of this ledger
    /// records it `recovered` — queued again while it has attempts left,
    /// `failed` otherwise (the default is one attempt). On a database
    /// (--database) every attempt is leased, and any process records it
    /// once its lease runs out.
    Serve {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:7474")]
        listen: std::net::SocketAddr,
        /// How many executions run at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: u16,
        /// On SIGTERM or Ctrl-C, how long running attempts may take to finish.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=3600))]
        grace_secs: u16,
        /// API keys: {"keys": [{"tenant": "acme", "sha256": "<hex>"}, {"admin": true, "sha256": "<hex>"}]}.
        /// Without it, serve listens on loopback only and every request acts as admin.
        // The text is the --help line, where `<hex>` is meant as written.
        #[allow(rustdoc::invalid_html_tags)]
        #[arg(long)]
        keys: Option<PathBuf>,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Hold each attempt its workers run under a lease of this many
        /// milliseconds, renewed every third of it: when this process stops,
        /// the others sharing its database take its attempts back once
        /// their leases run out (default on a database: 30000; on a data
        /// directory, none: recovered when the ledger is next opened).
        #[arg(long, value_parser = lease_ms())]
        lease_ms: Option<u64>,
        /// Sign every callback with its tenant's secret (the
        /// `Ledger-Signature` header): {"secrets": {"acme": ["NEW", "OLD"],
        /// "*": ["…"]}}, "*" for the tenants not named, each secret 16 bytes
        /// or more. Each delivery is
        /// signed with every secret its tenant has, so a rotation lists the
        /// new beside the old; the file is re-read within a second of a
        /// change. A tenant with no secret (and no default) gets no unsigned
        /// callback: the attempt is recorded as failed.
        #[arg(long, value_name = "FILE")]
        callback_secrets: Option<PathBuf>,
    },
    /// Run a command as a worker for one callable of a running `ledger
    /// serve` (or `ledger run`): it claims that callable's executions and
    /// runs CMD (under `sh -c`) once per attempt, the input on stdin and the
    /// execution in the environment (LEDGER_EXECUTION_ID, LEDGER_ATTEMPT,
    /// LEDGER_TENANT_ID, LEDGER_CALLABLE, LEDGER_CONTEXT as JSON, and
    /// LEDGER_CONTEXT_<KEY> for each entry).
    ///
    /// Exit 0: the attempt completes with stdout (as JSON when it parses,
    /// else as a string). Any other exit: it fails (retried by its policy)
    /// with the exit status and the tail of stderr. The child is killed
    /// when the execution is cancelled, its lease is lost, or its timeout
    /// passes. SIGTERM or Ctrl-C stops claiming and lets running children
    /// finish.
    #[allow(rustdoc::invalid_html_tags)]
    Worker {
        /// The callable it runs.
        #[arg(long)]
        callable: String,
        /// The command, run with `sh -c`.
        #[arg(long, value_name = "CMD")]
        exec: String,
        /// How many attempts run at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=100))]
        concurrency: u16,
        /// The lease of each attempt; heartbeats renew it every third of it.
        #[arg(long, default_value_t = DEFAULT_LEASE.as_millis() as u64, value_parser = lease_ms())]
        lease_ms: u64,
        /// The worker's name, recorded in `started` events (default
        /// worker-PID).
        #[arg(long)]
        name: Option<String>,
    },
    /// A guided tour on a fresh ledger: run a mixed workload, audit one
    /// execution, travel back in time, verify.
    Demo {
        /// The directory for the demo's ledger (default: a new one under
        /// the data directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The arguments of `redact`, `hold` and `release-hold`.
#[derive(Debug, Args)]
pub(crate) struct RetainArgs {
    /// The execution.
    #[arg(value_parser = parse_id)]
    pub(crate) id: ExecutionId,
    /// Why (recorded in the event).
    #[arg(long)]
    pub(crate) reason: String,
    /// Who asks (recorded; default: the user running the command).
    #[arg(long)]
    pub(crate) by: Option<String>,
}

/// The arguments of `hold` and `release-hold`: an execution's, or a
/// whole tenant's.
#[derive(Debug, Args)]
pub(crate) struct HoldArgs {
    /// The execution.
    #[arg(value_parser = parse_id, required_unless_present = "whole_tenant")]
    pub(crate) id: Option<ExecutionId>,
    /// Hold (or release) all of this tenant's executions, those submitted
    /// later too, instead of one.
    #[arg(long, value_parser = parse_tenant, conflicts_with = "id")]
    pub(crate) whole_tenant: Option<TenantId>,
    /// Why (recorded).
    #[arg(long)]
    pub(crate) reason: String,
    /// Who asks (recorded; default: the user running the command).
    #[arg(long)]
    pub(crate) by: Option<String>,
}

/// A retention policy applied in the background (`serve`, `run`).
#[derive(Debug, Args)]
pub(crate) struct RetentionArgs {
    /// Apply this retention policy (JSON, as `ledger retain` takes) now and
    /// then every --retain-every seconds while it runs (and, with `run
    /// --exit-when-idle`, once more before it exits).
    #[arg(long, value_name = "FILE")]
    pub(crate) retention: Option<PathBuf>,
    /// How often the retention policy is applied, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=86_400), requires = "retention")]
    pub(crate) retain_every: u32,
}

impl RetentionArgs {
    /// The policy, read, and how often to apply it.
    pub(crate) fn load(
        &self,
    ) -> anyhow::Result<Option<(execution_ledger::RetentionPolicy, std::time::Duration)>> {
        self.retention
            .as_deref()
            .map(|file| {
                let policy = read_policy(file, "--retention")?;
                Ok((
                    policy,
                    std::time::Duration::from_secs(self.retain_every.into()),
                ))
            })
            .transpose()
    }
}

/// The retention policy in `file`; a file that cannot be read or parsed is
/// a usage error naming `flag` and the file.
pub(crate) fn read_policy(
    file: &std::path::Path,
    flag: &str,
) -> anyhow::Result<execution_ledger::RetentionPolicy> {
    let bytes =
        std::fs::read(file).map_err(|e| Usage(format!("{flag} {}: {e}", file.display())))?;
    let policy: execution_ledger::RetentionPolicy = crate::decode::json(&bytes, "the file")
        .map_err(|e| Usage(format!("{flag} {}: {}", file.display(), e.message)))?;
    policy
        .validate()
        .map_err(|e| Usage(format!("{flag} {}: {e}", file.display())))?;
    Ok(policy)
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleAction {
    /// Add a schedule; prints it and its next slots.
    Add {
        /// Its name, unique within the tenant (letters, digits and ._:-).
        name: String,
        /// When it fires: 5 fields (minute hour day-of-month month
        /// day-of-week), or 6 with seconds first; `*/5 * * * *`, `0 9 * * MON-FRI`.
        #[arg(long)]
        cron: String,
        /// The IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Slots that pass while nothing runs the schedule (the server
        /// stopped for longer than a minute past them): skip them, or fire
        /// the newest once to catch up.
        #[arg(long, default_value = "skip", value_parser = ["skip", "once"])]
        missed: String,
        /// Who adds it, kept with it (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// What each firing submits.
        #[command(flatten)]
        submit: Box<SubmitArgs>,
    },
    /// List the schedules (every tenant's, without --tenant).
    List,
    /// Remove a schedule; its executions stay.
    Remove {
        /// The schedule.
        name: String,
    },
    /// Pause a schedule: nothing fires until it is resumed, and the slots
    /// that pass meanwhile are skipped.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Resume a paused schedule from now.
    Resume {
        /// The schedule.
        name: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The callable to run.
    #[arg(long, required_unless_present = "from_file")]
    pub(crate) callable: Option<String>,
    /// Submit the submissions in FILE instead, one JSON object a line (as
    /// `POST /v1/executions` takes them; `-` for standard input), as one
    /// batch: all or none, at most 1,000. Prints each one's id in order.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["callable", "input", "priority", "mode", "timeout_ms", "max_attempts", "context", "idempotency_key", "callback_url", "run_at"]
    )]
    pub(crate) from_file: Option<PathBuf>,
    /// Its input.
    #[arg(long)]
    pub(crate) input: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 50, value_parser = parse_priority)]
    pub(crate) priority: u8,
    /// fire_and_forget, silent or deferred.
    #[arg(long, default_value = "fire_and_forget", value_parser = parse_mode)]
    pub(crate) mode: BackgroundExecutionMode,
    /// How long one attempt may run, in milliseconds.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub(crate) timeout_ms: u64,
    /// Attempts in all (retries with back-off when above 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) max_attempts: Option<u32>,
    /// Context for the callable, KEY=VALUE (repeatable).
    #[arg(long = "context", value_parser = parse_key_value)]
    pub(crate) context: Vec<(String, String)>,
    /// Submitting the same again with the same key returns the first
    /// execution; a different submission under a used key is refused.
    #[arg(long)]
    pub(crate) idempotency_key: Option<String>,
    /// Where a deferred execution's record is POSTed when it ends
    /// (`--mode deferred` only: other modes never call back, and are
    /// refused with a callback URL).
    #[arg(long)]
    pub(crate) callback_url: Option<String>,
    /// Not runnable before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(crate) run_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub(crate) struct AtArgs {
    /// As it was after this seq.
    #[arg(long, conflicts_with = "at_time")]
    pub(crate) at_seq: Option<u64>,
    /// As it was at this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    pub(crate) at_time: Option<DateTime<Utc>>,
}

impl AtArgs {
    pub(crate) fn at(&self) -> Option<At> {
        match (self.at_seq, self.at_time) {
            (Some(seq), _) => Some(At::Seq(seq)),
            (None, Some(t)) => Some(At::Time(t)),
            (None, None) => None,
        }
    }
}

fn parse_id(s: &str) -> Result<ExecutionId, String> {
    s.parse()
        .map_err(|e: execution_ledger::ParseIdError| e.to_string())
}

/// A lease in milliseconds, within what claims and heartbeats may ask for
/// (`MIN_LEASE` to `MAX_LEASE`).
fn lease_ms() -> clap::builder::RangedU64ValueParser {
    clap::value_parser!(u64).range(MIN_LEASE.as_millis() as u64..=MAX_LEASE.as_millis() as u64)
}

fn parse_status(s: &str) -> Result<BackgroundExecutionStatus, String> {
    s.parse()
        .map_err(|_| format!("takes one of {}, not {s:?}", crate::output::statuses()))
}

fn parse_cursor(s: &str) -> Result<Cursor, String> {
    s.parse()
        .map_err(|_| format!("not a cursor a page printed: {s:?}"))
}

fn parse_tenant(s: &str) -> Result<TenantId, String> {
    s.parse().map_err(|e: execution_ledger::ParseIdError| {
        format!("{e} (1-128 letters, digits and ._:-)")
    })
}

fn parse_weight(s: &str) -> Result<u32, String> {
    s.parse()
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| format!("takes a whole number from 1 to {MAX_WEIGHT}"))
}

fn parse_limit(s: &str) -> Result<u32, String> {
    s.parse().ok().filter(|l| *l >= 1).ok_or_else(|| {
        "takes a whole number of running attempts from 1 (leave it out for no limit)".to_owned()
    })
}

fn parse_mode(s: &str) -> Result<BackgroundExecutionMode, String> {
    s.parse()
        .map_err(|_| format!("--mode must be fire_and_forget, silent or deferred, not {s:?}"))
}

fn parse_priority(s: &str) -> Result<u8, String> {
    s.parse().map_err(|_| "--priority must be 0-255".to_owned())
}

fn parse_json(s: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}): {s:?}"))
}

fn parse_server(s: &str) -> Result<String, String> {
    let bad = || format!("must be an http:// or https:// URL, not {s:?}");
    let url = reqwest::Url::parse(s).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(bad());
    }
    Ok(s.to_owned())
}

fn parse_database(s: &str) -> Result<String, String> {
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(s.to_owned())
    } else {
        Err("takes a postgres:// URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE".into())
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("--context takes KEY=VALUE, not {s:?}")),
    }
}

/// A failure that has been reported already and only sets the exit code.
#[derive(Debug)]
pub(crate) struct Exit(pub(crate) u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// A usage error found after parsing: exit 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The scenarios of `ledger bench`, by the names `--only` takes.
pub(crate) const SCENARIOS: [&str; 16] = [
    "relaxed",
    "durable",
    "end-to-end",
    "peer-workload",
    "replay",
    "list",
    "snapshots",
    "claim",
    "retention",
    "queue",
    "http",
    "http-external",
    "remote",
    "memory",
    "archive",
    "postgres",
];
