#!/usr/bin/env bash
# Online backup under load (issue 21): loads ~N rows into a SHARED table with 1,000-row
# batches, then runs insert-single c10 for 40 s and takes BACKUP DATABASE 12 s in; prints the
# insert rate before, during and after the backup from the bench's half-second progress.
#
#   scripts/bench-backup.sh <server-binary> <bench-binary> [load-seconds]
#
# NO_BACKUP=1 runs the same without the backup (the baseline: the load's own compactions
# also run in these 40 s). FLUSH=1 flushes the loaded rows to Parquet segments first (and
# waits for it), so the backup copies segments, not only a checkpoint.
set -euo pipefail
server=${1:?server binary}; bench=${2:?bench binary}; load=${3:-40}
data=$(mktemp -d); out=$(mktemp -d)
export KALAMDB_BENCH_PASSWORD=bench-pass-123
KALAMDB_DATA_DIR=$data KALAMDB_ROOT_PASSWORD=$KALAMDB_BENCH_PASSWORD KALAMDB_LOG_LEVEL=warn \
  KALAMDB_SERVER_PORT=18080 "$server" --config "$data/absent.toml" >/dev/null 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null; rm -rf "$data" "$out"' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18080/health >/dev/null 2>&1 && break; sleep 0.1; done
url=http://127.0.0.1:18080
"$bench" --url $url --workload insert-batch --batch 1000 --concurrency 2 --duration "$load" --warmup 0 \
  --json "$out/load.json" >/dev/null 2>&1
python3 -c "import json;r=json.load(open('$out/load.json'))['results'][0];print('loaded rows:', r['rows'])"
token=$(curl -s $url/v1/api/auth/login -H 'Content-Type: application/json' \
  -d "{\"user\":\"root\",\"password\":\"$KALAMDB_BENCH_PASSWORD\"}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["access_token"])')
if [ -n "${FLUSH:-}" ]; then
  f0=$(date +%s.%N)
  curl -s --max-time 1800 $url/v1/api/sql -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"sql":"STORAGE FLUSH ALL"}' | head -c 300; echo
  echo "flush took $(python3 -c "print(round($(date +%s.%N)-$f0,1))") s; segments: $(du -sh "$data/storage" | cut -f1)"
fi
"$bench" --url $url --workload insert-single --concurrency 10 --duration 40 --warmup 0 > "$out/progress.txt" 2>&1 &
b=$!
t0=$(date +%s.%N)
sleep 12
s=$(date +%s.%N)
if [ -z "${NO_BACKUP:-}" ]; then
  curl -s $url/v1/api/sql -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "{\"sql\":\"BACKUP DATABASE TO '$out/bk'\"}" | head -c 300; echo
else
  sleep 2
fi
e=$(date +%s.%N)
wait $b
python3 - "$out/progress.txt" "$t0" "$s" "$e" <<'PY'
import re,sys
text=open(sys.argv[1]).read()
t0,s,e=map(float,sys.argv[2:5]); s-=t0; e-=t0
pts=[(float(a),float(b)) for a,b in re.findall(r'insert-single:\s+([\d.]+)s\s+\d+ req/s\s+(\d+) rows/s',text)]
# progress lines are cumulative rates: rows done = rate * t; rate in a window = delta rows / delta t
done=[(t,r*t) for t,r in pts]
def rate(a,b):
    xs=[(t,d) for t,d in done if a<=t<=b]
    return (xs[-1][1]-xs[0][1])/(xs[-1][0]-xs[0][0]) if len(xs)>1 else float('nan')
before=rate(1,s); during=rate(s,max(e,s+2)); after=rate(max(e,s+2),39.5)
print(f"backup took {e-s:.2f} s; insert-single c10 rows/s before {before:.0f}, in the 2 s from its start {during:.0f} ({during/before*100:.0f}%), after {after:.0f}")
for t,r in pts[::4]: print(f"  t={t:5.1f}s cumulative {r:.0f} rows/s")
PY
[ -d "$out/bk" ] && du -sh "$out/bk" | cut -f1 | sed 's/^/backup size: /'
