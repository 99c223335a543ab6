#!/usr/bin/env bash
# execution-ledger on PostgreSQL side by side with graphile-worker, in one sitting.
#
# 1. Starts a private PostgreSQL cluster (initdb into a temp dir, trust auth, 127.0.0.1 on a free
#    port, unix socket in the temp dir, fsync=on and synchronous_commit=on: the server's defaults,
#    graphile-worker's fsync-on mode); as root the server runs as user nobody.
# 2. Runs `ledger --database URL bench --only postgres --json` against it (each round in a database
#    of its own), then stops that server.
# 3. Runs the graphile-worker peer (../shared/peers/graphile-worker/run.sh, its own fresh cluster
#    per run) on the same workload.
# 4. Prints one table: enqueue and process jobs/s of the ledger on PostgreSQL, on sled and of
#    graphile-worker, and the targets: process ratio ledger-PG/graphile >= 5, enqueue ratio >= 2,
#    appends from 3 processes / 1 process >= 1.5, each met or missed.
#
# Usage (from the project root, after `cargo build --release`):
#   bash benches/postgres-side-by-side.sh
# env: QUICK=1 (ledger bench --quick and N=2000 for the peer), RUNS (3), MODES (fsync-on),
#      N (the peer's jobs; 20000, 2000 with QUICK=1), PG_BIN (/usr/lib/postgresql/15/bin),
#      LEDGER (target/release/ledger), PEERS (../shared/peers)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
LEDGER="${LEDGER:-$ROOT/target/release/ledger}"
PEERS="${PEERS:-$ROOT/../shared/peers}"
RUNS="${RUNS:-3}"
MODES="${MODES:-fsync-on}"
QUICK="${QUICK:-}"
if [ -n "$QUICK" ]; then N="${N:-2000}"; BENCH_SIZE=(--quick); else N="${N:-20000}"; BENCH_SIZE=(); fi

[ -x "$LEDGER" ] || { echo "$LEDGER is missing: run cargo build --release first" >&2; exit 1; }
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || {
  echo "PostgreSQL binaries not found in $PG_BIN (apt-get install postgresql-15)" >&2; exit 1; }
[ -f "$PEERS/graphile-worker/run.sh" ] || { echo "no graphile-worker peer in $PEERS" >&2; exit 1; }
command -v node >/dev/null || { echo "node is required (the peer runs on it; so does the table)" >&2; exit 1; }

# PostgreSQL refuses to run as root: run initdb/pg_ctl as nobody.
if [ "$(id -u)" = 0 ]; then
  PG_USER=nobody
  as_pg() { runuser -u "$PG_USER" -- "$@"; }
else
  PG_USER="$(id -un)"
  as_pg() { "$@"; }
fi

free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }

PGTMP=""; PG_PID=""; WORK=""
stop_pg() {
  if [ -n "$PGTMP" ] && [ -f "$PGTMP/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGTMP/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  fi
  if [ -n "$PG_PID" ] && kill -0 "$PG_PID" 2>/dev/null; then  # pg_ctl failed: stop it by PID
    kill -INT "$PG_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PG_PID" 2>/dev/null || true
  fi
  PG_PID=""
  if [ -n "$PGTMP" ]; then rm -rf "$PGTMP"; fi
  PGTMP=""
}
cleanup() { stop_pg; if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

WORK="$(mktemp -d /tmp/ledger-side-by-side.XXXXXX)"
PORT="$(free_port)"; while [ "$PORT" = 5432 ]; do PORT="$(free_port)"; done
PGTMP="$(mktemp -d /tmp/ledger-pg.XXXXXX)"
chmod 755 "$PGTMP"
chown "$PG_USER" "$PGTMP"
as_pg "$PG_BIN/initdb" -D "$PGTMP/data" -U ledger -A trust -E UTF8 --locale=C --no-sync \
  >"$PGTMP/initdb.log" 2>&1 || { cat "$PGTMP/initdb.log" >&2; exit 1; }
as_pg "$PG_BIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/postgres.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$PGTMP \
      -c fsync=on -c synchronous_commit=on" start >/dev/null \
  || { echo "postgres did not start" >&2; cat "$PGTMP/postgres.log" >&2; exit 1; }
PG_PID="$(head -1 "$PGTMP/data/postmaster.pid")"
PG_VER="$("$PG_BIN/postgres" --version | awk '{print $3}')"
FS="$(df -T /tmp | awk 'NR==2{print $2}')"
URL="postgres://ledger@127.0.0.1:$PORT/postgres"
echo "ledger on PostgreSQL $PG_VER at 127.0.0.1:$PORT (fsync=on, synchronous_commit=on), fs(/tmp)=$FS" >&2

"$LEDGER" --database "$URL" --data-dir "$WORK" bench --only postgres --json "${BENCH_SIZE[@]}" \
  >"$WORK/ledger.json"
stop_pg

(cd "$ROOT" && N="$N" RUNS="$RUNS" MODES="$MODES" bash "$PEERS/graphile-worker/run.sh") \
  | tee "$WORK/graphile.txt" >&2

LEDGER_JSON="$WORK/ledger.json" GRAPHILE="$WORK/graphile.txt" PG_VER="$PG_VER" node -e '
const fs = require("fs");
const ledger = JSON.parse(fs.readFileSync(process.env.LEDGER_JSON, "utf8"));
const by = name => {
  const s = ledger.scenarios.find(s => s.name === name);
  if (!s) throw new Error(`ledger bench printed no scenario ${name}`);
  return s;
};
const appends = by("PostgreSQL: durable appends, 3 processes vs 1");
const enq = by("PostgreSQL: peers\u0027 workload, enqueue");
const proc = by("PostgreSQL: peers\u0027 workload, process");
const peers = fs.readFileSync(process.env.GRAPHILE, "utf8").trim().split("\n")
  .filter(l => l.startsWith("{")).map(JSON.parse);
const gw = peers.find(p => p.durability.startsWith("pg-default")) || peers[0];
const f0 = x => Math.round(x).toLocaleString("en-US");
const f2 = x => x.toFixed(2);
const rows = [
  ["system", "enqueue jobs/s", "process jobs/s"],
  [`execution-ledger on PostgreSQL ${process.env.PG_VER} (synced)`, f0(enq.value), f0(proc.value)],
  ["execution-ledger on sled (synced)", f0(enq.baseline), f0(proc.baseline)],
  [`graphile-worker ${gw["graphile-worker"]} (${gw.durability})`, f0(gw.enqueue_jobs_per_s), f0(gw.process_jobs_per_s)],
];
const targets = [
  ["target", "ratio", "wanted", ""],
  ["process: ledger-PG / graphile-worker", proc.value / gw.process_jobs_per_s, 5],
  ["enqueue: ledger-PG / graphile-worker", enq.value / gw.enqueue_jobs_per_s, 2],
  [`appends: 3 processes / 1 (${f0(appends.value)} vs ${f0(appends.baseline)} appends/s)`, appends.ratio, 1.5],
].map((r, i) => i === 0 ? r : [r[0], f2(r[1]), `>= ${r[2]}`, r[1] >= r[2] ? "met" : "missed"]);
const print = t => {
  const w = t[0].map((_, c) => Math.max(...t.map(r => String(r[c]).length)));
  for (const r of t) console.log(r.map((v, c) => c === 0 ? String(v).padEnd(w[c]) : String(v).padStart(w[c])).join("  ").trimEnd());
};
console.log(`N=${gw.n} jobs, medians of ${gw.runs} runs (graphile-worker) and of the ledger bench rounds; ledger: ${proc.size}`);
print(rows);
console.log("");
print(targets);
'
