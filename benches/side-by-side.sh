#!/usr/bin/env bash
# execution-ledger side by side with the peers (BullMQ + Redis, graphile-worker + PostgreSQL) on
# their workload (../shared/peers/README.md), in one sitting.
#
# 1. Runs the peers' harnesses: ../shared/peers/bullmq/run.sh (appendfsync always, and no AOF) and
#    ../shared/peers/graphile-worker/run.sh (fsync-on), each on fresh stores, medians of RUNS; their
#    last JSON lines go to one file.
# 2. Starts a private PostgreSQL cluster (initdb into a temp dir, trust auth, 127.0.0.1 on a free
#    port, unix socket in the temp dir, fsync=on and synchronous_commit=on: graphile-worker's
#    fsync-on mode); as root the server runs as user nobody.
# 3. Runs `ledger --database URL bench --only peer-workload,postgres --peers FILE --json`: the
#    ledger on the peers' N, on sled (synced and buffered) and on that server, held to its targets
#    against the peers' figures of this sitting and against its own log.
# 4. Prints the figures of every system and every target, met or missed.
#
# Usage (from the project root, after `cargo build --release`):
#   bash benches/side-by-side.sh
# env: QUICK=1 (N=2000, one run of each peer; the ledger still takes medians of 3 rounds when held
#      against the peers), RUNS (3), N (20000), PG_BIN (/usr/lib/postgresql/15/bin),
#      LEDGER (target/release/ledger), PEERS (../shared/peers), OUT (a file for the ledger's JSON)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
LEDGER="${LEDGER:-$ROOT/target/release/ledger}"
PEERS="${PEERS:-$ROOT/../shared/peers}"
QUICK="${QUICK:-}"
if [ -n "$QUICK" ]; then N="${N:-2000}"; RUNS="${RUNS:-1}"; BENCH_SIZE=(--quick); else N="${N:-20000}"; RUNS="${RUNS:-3}"; BENCH_SIZE=(); fi

[ -x "$LEDGER" ] || { echo "$LEDGER is missing: run cargo build --release first" >&2; exit 1; }
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || {
  echo "PostgreSQL binaries not found in $PG_BIN (apt-get install postgresql-15)" >&2; exit 1; }
for p in bullmq graphile-worker; do
  [ -f "$PEERS/$p/run.sh" ] || { echo "no $p peer in $PEERS" >&2; exit 1; }
done
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

# 1. The peers, each on its own fresh stores.
(cd "$ROOT" && N="$N" RUNS="$RUNS" MODES="aof-always default" bash "$PEERS/bullmq/run.sh") \
  | tee "$WORK/bullmq.txt" >&2
(cd "$ROOT" && N="$N" RUNS="$RUNS" MODES="fsync-on" bash "$PEERS/graphile-worker/run.sh") \
  | tee "$WORK/graphile.txt" >&2
grep -h '^{' "$WORK/bullmq.txt" "$WORK/graphile.txt" >"$WORK/peers.jsonl"

# 2. A PostgreSQL server for the ledger, as graphile-worker's fsync-on mode has it.
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
echo "ledger on sled in $WORK and on PostgreSQL $PG_VER at 127.0.0.1:$PORT (fsync=on, synchronous_commit=on), fs(/tmp)=$FS" >&2

# 3. The ledger, on the peers' N.
"$LEDGER" --database "$URL" --data-dir "$WORK" bench --only peer-workload,postgres \
  --peers "$WORK/peers.jsonl" --json "${BENCH_SIZE[@]}" >"$WORK/ledger.json"
stop_pg
if [ -n "${OUT:-}" ]; then cp "$WORK/ledger.json" "$OUT"; fi

# 4. One table.
LEDGER_JSON="$WORK/ledger.json" PEERS_JSON="$WORK/peers.jsonl" PG_VER="$PG_VER" node -e '
const fs = require("fs");
const ledger = JSON.parse(fs.readFileSync(process.env.LEDGER_JSON, "utf8"));
const by = name => {
  const s = ledger.scenarios.find(s => s.name === name);
  if (!s) throw new Error(`ledger bench printed no scenario ${name}`);
  return s;
};
const peers = fs.readFileSync(process.env.PEERS_JSON, "utf8").trim().split("\n").map(JSON.parse);
const f0 = x => Math.round(x).toLocaleString("en-US");
const f2 = x => x.toFixed(2);
const rows = [
  ["system", "enqueue jobs/s", "process jobs/s"],
  ["execution-ledger on sled, synced",
   f0(by("peers\u0027 workload, enqueue (sled synced) vs BullMQ appendfsync always").value),
   f0(by("peers\u0027 workload, process (sled synced) vs BullMQ appendfsync always").value)],
  ["execution-ledger on sled, buffered", "",
   f0(by("peers\u0027 workload, process (sled buffered) vs BullMQ without persistence").value)],
  [`execution-ledger on PostgreSQL ${process.env.PG_VER}, synced`,
   f0(by("PostgreSQL: peers\u0027 workload, enqueue").value),
   f0(by("PostgreSQL: peers\u0027 workload, process").value)],
  ...peers.map(p => [`${p.peer} (${p.durability})`, f0(p.enqueue_jobs_per_s), f0(p.process_jobs_per_s)]),
];
const targets = [["target", "value", "baseline", "ratio", "wanted", ""]].concat(
  ledger.scenarios.filter(s => s.met !== null).map(s =>
    [`${s.name} (${s.baselineName})`, f0(s.value), f0(s.baseline), f2(s.ratio), `>= ${s.target}`, s.met ? "met" : "MISSED"]));
const print = t => {
  const w = t[0].map((_, c) => Math.max(...t.map(r => String(r[c]).length)));
  for (const r of t) console.log(r.map((v, c) => c === 0 ? String(v).padEnd(w[c]) : String(v).padStart(w[c])).join("  ").trimEnd());
};
console.log(`N=${peers[0].n} jobs; peers: medians of ${peers[0].runs} runs; ledger: ${by("peers\u0027 workload, process (sled synced) vs its log").size}`);
print(rows);
console.log("");
print(targets);
'
