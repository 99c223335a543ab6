//! Where a test's ledger lives: a temporary sled directory, or a fresh
//! database on a real PostgreSQL server.
//!
//! `LEDGER_TEST_BACKEND=sled|postgres` (default sled) picks the engine for
//! [`store`]. The PostgreSQL server is the one `LEDGER_TEST_DATABASE_URL`
//! names (e.g. `postgres://user@host:5432/postgres`), or else a private one
//! the test binary starts on first use from the installed PostgreSQL: a
//! fresh cluster in a temporary directory, on 127.0.0.1 and a free port, run
//! by a watchdog shell that stops it and removes its directory as soon as the
//! test process ends, however it ends (the watchdog's stdin is a pipe only
//! this process holds open).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable that picks the engine a test suite runs on.
pub const BACKEND_VAR: &str = "LEDGER_TEST_BACKEND";
/// The variable naming an existing PostgreSQL server to use instead of a
/// private one.
pub const DATABASE_URL_VAR: &str = "LEDGER_TEST_DATABASE_URL";

/// How long a private server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many free ports a private server tries before giving up.
const PORT_ATTEMPTS: usize = 4;

/// Which engine a test suite runs on: LEDGER_TEST_BACKEND=sled|postgres (default sled).
/// Any other value panics with a one-line message naming the variable and the two values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// The engine `LEDGER_TEST_BACKEND` names; panics on any value but `sled`
/// or `postgres`.
pub fn backend() -> Backend {
    let value = std::env::var_os(BACKEND_VAR);
    let value = value.as_ref().map(|v| v.to_string_lossy());
    parse_backend(value.as_deref()).unwrap_or_else(|message| panic!("{message}"))
}

/// Reads a value of `LEDGER_TEST_BACKEND` (`None`: unset).
pub fn parse_backend(value: Option<&str>) -> Result<Backend, String> {
    match value {
        None | Some("sled") => Ok(Backend::Sled),
        Some("postgres") => Ok(Backend::Postgres),
        Some(other) => Err(format!(
            "{BACKEND_VAR} must be sled or postgres, not {other:?}"
        )),
    }
}

/// Where one test's ledger lives: a fresh temp dir (sled) or a fresh, empty database (postgres).
pub struct TestStore {
    place: Place,
    location: PathBuf,
}

enum Place {
    /// Removed when the store is dropped.
    Sled(tempfile::TempDir),
    /// Left in place: a private server's databases go with its directory
    /// when the test process ends.
    Postgres(String),
}

impl TestStore {
    /// [`location`](Self::location), borrowed: `Ledger::open(store.path())`
    /// opens the test's ledger on either engine.
    pub fn path(&self) -> &Path {
        &self.location
    }

    /// The command-line arguments that name this ledger: `--data-dir DIR`
    /// or `--database URL`.
    pub fn args(&self) -> [String; 2] {
        match &self.place {
            Place::Sled(dir) => ["--data-dir".into(), dir.path().display().to_string()],
            Place::Postgres(url) => ["--database".into(), url.clone()],
        }
    }

    /// What to pass to `Ledger::open` / `Ledger::builder` / `--data-dir`/`--database`: the directory's path, or the database's URL (as a PathBuf holding the URL string, e.g. "postgres://ledger@127.0.0.1:PORT/ledger_t_3").
    pub fn location(&self) -> PathBuf {
        match &self.place {
            Place::Sled(dir) => dir.path().to_owned(),
            Place::Postgres(url) => PathBuf::from(url),
        }
    }

    /// The database URL (postgres only), None for sled.
    pub fn url(&self) -> Option<String> {
        match &self.place {
            Place::Sled(_) => None,
            Place::Postgres(url) => Some(url.clone()),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.place {
            Place::Sled(_) => Backend::Sled,
            Place::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The option that names the ledger at `place` on the command line:
/// `--database` for a `postgres://` URL, else `--data-dir`.
pub fn place_flag(place: &Path) -> &'static str {
    match place.to_str() {
        Some(s) if s.starts_with("postgres://") => "--database",
        _ => "--data-dir",
    }
}

/// A TestStore on `backend()`.
pub fn store() -> TestStore {
    store_on(backend())
}

/// A TestStore on the given backend.
pub fn store_on(b: Backend) -> TestStore {
    let place = match b {
        Backend::Sled => Place::Sled(
            tempfile::Builder::new()
                .prefix("ledger-test-")
                .tempdir()
                .expect("a temporary directory"),
        ),
        Backend::Postgres => Place::Postgres(server().database()),
    };
    let location = match &place {
        Place::Sled(dir) => dir.path().to_owned(),
        Place::Postgres(url) => PathBuf::from(url),
    };
    TestStore { place, location }
}

/// The test process's PostgreSQL server (started on first use, once per test binary).
pub struct PgServer {
    /// The database `CREATE DATABASE` runs in.
    admin_url: String,
    psql: PathBuf,
    /// Whether psql runs without the caller's `PG*` libpq variables (for a
    /// private server, which none of them is meant for).
    clean_env: bool,
    /// `None` when the server is the one `LEDGER_TEST_DATABASE_URL` names.
    private: Option<Private>,
}

/// A server this process started.
struct Private {
    dir: PathBuf,
    /// The watchdog shell. Its stdin is never written to nor closed: it
    /// closes when this process exits, and the watchdog then stops the
    /// server and removes `dir`.
    _watchdog: Child,
    _watchdog_stdin: ChildStdin,
    _watchdog_stdout: ChildStdout,
}

/// The test process's PostgreSQL server, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
    match SERVER.get_or_init(PgServer::start) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

impl PgServer {
    /// Creates a fresh empty database and returns its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "ledger_t_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.sql(&self.admin_url, &format!("CREATE DATABASE {name}"));
        with_database(&self.admin_url, &name)
    }

    /// Runs one SQL statement (or several separated by ';') in the database at `url` with psql; panics with psql's stderr on failure. Returns psql's stdout (unaligned, tuples only: `-At`).
    pub fn sql(&self, url: &str, sql: &str) -> String {
        self.try_sql(url, sql)
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// The private server's postmaster, from its `postmaster.pid`; `None`
    /// for the server `LEDGER_TEST_DATABASE_URL` names.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let data = self.data_dir()?;
        let text = std::fs::read_to_string(data.join("postmaster.pid"))
            .unwrap_or_else(|e| panic!("{}: {e}", data.join("postmaster.pid").display()));
        let pid = text
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok());
        Some(pid.unwrap_or_else(|| panic!("no pid in {}/postmaster.pid", data.display())))
    }

    /// The private server's data directory; `None` for the server
    /// `LEDGER_TEST_DATABASE_URL` names.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.private.as_ref().map(|p| p.dir.join("data"))
    }

    fn try_sql(&self, url: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(&self.psql);
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .stdin(Stdio::null());
        if self.clean_env {
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("PG") {
                    cmd.env_remove(name);
                }
            }
        }
        if self.clean_env || std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "10");
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.psql.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "psql in {url} failed ({}) running {sql:?}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn start() -> Result<PgServer, String> {
        let Some(url) = std::env::var_os(DATABASE_URL_VAR) else {
            return PgServer::start_private();
        };
        let url = url
            .into_string()
            .map_err(|_| format!("{DATABASE_URL_VAR} is not UTF-8"))?;
        if url.is_empty() {
            return Err(format!(
                "{DATABASE_URL_VAR} is empty: unset it for a private server, or name one (postgres://user@host:5432/postgres)"
            ));
        }
        let server = PgServer {
            psql: psql_program(server_bindir().ok().as_deref())?,
            admin_url: url,
            clean_env: false,
            private: None,
        };
        server
            .try_sql(&server.admin_url, "select 1")
            .map_err(|e| format!("the server {DATABASE_URL_VAR} names does not answer: {e}"))?;
        Ok(server)
    }

    fn start_private() -> Result<PgServer, String> {
        let started = Instant::now();
        let bin = server_bindir()?;
        let psql = psql_program(Some(&bin))?;
        // Removed on failure; once the server runs, its watchdog removes it.
        let tmp = tempfile::Builder::new()
            .prefix("ledger-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for PostgreSQL: {e}"))?;
        let dir = tmp.path().to_owned();
        // PostgreSQL refuses to run as root.
        let user = if running_as_root() {
            let user = unprivileged_user();
            reachable_by(&dir, user.0)?;
            chown_tree(&dir, user)?;
            Some(user)
        } else {
            None
        };
        let data = dir.join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "--auth=trust",
                "-U",
                "ledger",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(&dir)
            .stdin(Stdio::null());
        as_user(&mut initdb, user);
        let out = initdb
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb -D {} failed ({}): {}{}",
                data.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let initialized = started.elapsed();

        let log = dir.join("postgres.log");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let admin_url = format!("postgres://ledger@127.0.0.1:{port}/postgres");
            let mut watchdog = Watchdog::spawn(&bin, &dir, port, user)?;
            let mut server = PgServer {
                admin_url,
                psql: psql.clone(),
                clean_env: true,
                private: None,
            };
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                if server.try_sql(&server.admin_url, "select 1").is_ok() {
                    eprintln!(
                        "PostgreSQL from {} on 127.0.0.1:{port} in {}: initdb took {:.2} s, the server {:.2} s more",
                        bin.display(),
                        dir.display(),
                        initialized.as_secs_f64(),
                        (started.elapsed() - initialized).as_secs_f64()
                    );
                    let _ = tmp.keep();
                    server.private = Some(Private {
                        dir,
                        _watchdog: watchdog.child,
                        _watchdog_stdin: watchdog.stdin,
                        _watchdog_stdout: watchdog.stdout,
                    });
                    return Ok(server);
                }
                if !alive(watchdog.pid) {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    // Killed, not told to stop: the watchdog would remove the
                    // cluster the next attempt needs.
                    let _ = watchdog.child.kill();
                    let _ = watchdog.child.wait();
                    if text.contains("could not bind") || text.contains("already in use") {
                        break;
                    }
                    return Err(format!(
                        "PostgreSQL exited at start; its log ({}):\n{text}",
                        log.display()
                    ));
                }
                if Instant::now() > deadline {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    return Err(format!(
                        "PostgreSQL did not accept connections on 127.0.0.1:{port} within {} s; its log ({}):\n{text}",
                        READY_TIMEOUT.as_secs(),
                        log.display()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(format!(
            "PostgreSQL found no free port in {PORT_ATTEMPTS} attempts; its log ({}):\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }
}

/// The shell that runs a private postmaster and, once its stdin reaches
/// end of file (this process has exited), stops it with a fast shutdown
/// and removes the server's directory. It ignores the signals a terminal
/// sends so that the cleanup still happens on ^C.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM
dir=$1
shift
"$@" >"$dir/postgres.log" 2>&1 &
pid=$!
echo "$pid"
read _ignored
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

struct Watchdog {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The postmaster's.
    pid: u32,
}

impl Watchdog {
    fn spawn(
        bin: &Path,
        dir: &Path,
        port: u16,
        user: Option<(u32, u32)>,
    ) -> Result<Watchdog, String> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("sh")
            .arg(dir)
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
            ])
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        as_user(&mut cmd, user);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run sh for PostgreSQL's watchdog: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let Ok(pid) = line.trim().parse::<u32>() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "PostgreSQL's watchdog did not start postgres (it printed {line:?})"
            ));
        };
        Ok(Watchdog {
            child,
            stdin,
            stdout: reader.into_inner(),
            pid,
        })
    }
}

/// Whether a process exists and has not exited (a zombie has).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status
            .lines()
            .find_map(|line| line.strip_prefix("State:"))
            .is_some_and(|state| !state.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// `url` with its database replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let query = url[authority_end..]
        .find('?')
        .map_or("", |i| &url[authority_end + i..]);
    format!("{}/{name}{query}", &url[..authority_end])
}

/// The highest-numbered `/usr/lib/postgresql/*/bin` that has `initdb`, else
/// `pg_config --bindir`.
fn server_bindir() -> Result<PathBuf, String> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(version) = name
                .split('.')
                .map(str::parse::<u32>)
                .collect::<Result<Vec<u32>, _>>()
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if bin.join("initdb").is_file() {
                found.push((version, bin));
            }
        }
    }
    if let Some((_, bin)) = found.into_iter().max() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && bin.join("initdb").is_file() {
            return Ok(bin);
        }
    }
    Err(format!(
        "PostgreSQL's server programs are missing: no initdb in /usr/lib/postgresql/*/bin nor in `pg_config --bindir`. \
         Install them (`apt-get install postgresql`) or name a running server in {DATABASE_URL_VAR}"
    ))
}

/// `psql` from the server's programs, else from `PATH`.
fn psql_program(bin: Option<&Path>) -> Result<PathBuf, String> {
    let from_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    bin.into_iter()
        .map(Path::to_owned)
        .chain(from_path)
        .map(|dir| dir.join("psql"))
        .find(|psql| psql.is_file())
        .ok_or_else(|| {
            "psql is missing: install it (`apt-get install postgresql-client`, or `apt-get install postgresql` for a private server too)".to_owned()
        })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of user nobody (65534 when /etc/passwd has none).
fn unprivileged_user() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                if fields.len() > 3 && fields[0] == "nobody" {
                    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
                } else {
                    None
                }
            })
        })
        .unwrap_or((65534, 65534))
}

/// Refuses a directory `uid` cannot reach because a directory above it
/// is closed to others.
fn reachable_by(dir: &Path, uid: u32) -> Result<(), String> {
    for above in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(above).map_err(|e| format!("{}: {e}", above.display()))?;
        if meta.uid() != uid && meta.mode() & 0o001 == 0 {
            return Err(format!(
                "PostgreSQL runs as uid {uid} (it refuses root) and cannot reach {}: {} is closed to others; \
                 set TMPDIR to a directory it can reach, such as /tmp",
                dir.display(),
                above.display()
            ));
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, (uid, gid): (u32, u32)) -> Result<(), String> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            chown_tree(&entry.path(), (uid, gid))?;
        }
    }
    Ok(())
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}
